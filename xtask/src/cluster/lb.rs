//! The kubelet's way to the API server: a TCP forwarder on 127.0.0.1:6444 (like the load balancer
//! in front of a real control plane) that the `api-partition` fault can cut while the admin path
//! (straight to 6443) stays up.
//!
//! Cut means a partition, not a refusal: existing connections are closed and new ones are accepted
//! and then left hanging, so the kubelet sees timeouts as it would across a broken network.

use std::{
    io,
    net::{Shutdown, TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

/// `xtask lb` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub listen: String,
    #[arg(long)]
    pub target: String,
    /// While this file exists the path is cut.
    #[arg(long)]
    pub cut_file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    {
        // Watch the cut file: on cut, close every forwarded connection; on heal, release the held
        // ones so clients reconnect at once.
        let (live, held, cut_file) = (live.clone(), held.clone(), args.cut_file.clone());
        thread::spawn(move || {
            let mut was_cut = false;
            loop {
                let cut = cut_file.exists();
                if cut && !was_cut {
                    for s in live.lock().unwrap().drain(..) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                if !cut && was_cut {
                    for s in held.lock().unwrap().drain(..) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                was_cut = cut;
                thread::sleep(Duration::from_millis(100));
            }
        });
    }
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if args.cut_file.exists() {
            held.lock().unwrap().push(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&args.target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut live = live.lock().unwrap();
            live.retain(|s| s.peer_addr().is_ok());
            if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                live.push(c);
                live.push(s);
            }
        }
        pipe(client.try_clone()?, server.try_clone()?);
        pipe(server, client);
    }
    Ok(())
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
