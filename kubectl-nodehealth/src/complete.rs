//! Shell completion. `kubectl nodehealth completion bash|zsh|fish|powershell` prints a static
//! script for the flags and subcommands; `completion kubectl` prints the
//! `kubectl_complete-nodehealth` helper that kubectl (≥ 1.26) runs to complete a plugin's
//! arguments. The helper calls `kubectl-nodehealth __complete <words…>`, which answers in cobra's
//! protocol (one candidate per line, then `:<directive>`) and completes node names, namespaces
//! and contexts from the cluster and the kubeconfig, with the connection flags already typed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::collect::KubeOptions;

/// The helper kubectl looks for on PATH (`kubectl_complete-<plugin>`).
pub const HELPER_NAME: &str = "kubectl_complete-nodehealth";

/// Its content: hand the words to the plugin.
pub const HELPER: &str = "#!/bin/sh\n\
# kubectl (>= 1.26) runs this to complete `kubectl nodehealth ...`.\n\
exec kubectl-nodehealth __complete \"$@\"\n";

/// Cobra's ShellCompDirective: offer no file names.
const NO_FILE_COMP: u8 = 4;
/// Cobra's ShellCompDirective: the shell's default (file names).
const DEFAULT_COMP: u8 = 0;

/// How long completion may wait for the cluster: a shell waiting on a TAB is a person waiting.
const CLUSTER_WAIT: Duration = Duration::from_secs(3);

/// What to offer for the word being completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// These words (already filtered by the prefix), and no files.
    Words(Vec<String>),
    /// Node names from the cluster, after these words.
    NodesAnd(Vec<String>),
    /// Namespaces from the cluster.
    Namespaces,
    /// Contexts / clusters / users from the kubeconfig.
    Kubeconfig(KubeconfigList),
    /// File names (the shell's own completion).
    Files,
}

/// Which kubeconfig list.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum KubeconfigList {
    Contexts,
    Clusters,
    Users,
}

/// Decides what to offer for the last word of `words` (the arguments after `kubectl nodehealth`;
/// the last one is what is being completed, possibly empty). Pure: no cluster access.
pub fn plan(words: &[String]) -> Offer {
    let root = Cli::command();
    let (current, typed) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    // Walk the typed words: the subcommand, positionals, and whether the last one is a flag that
    // takes a value.
    let mut sub: Option<clap::Command> = None;
    let mut positionals = 0usize;
    let mut pending_value: Option<clap::Arg> = None;
    for word in typed {
        if pending_value.take().is_some() {
            continue;
        }
        let cmd = sub.as_ref().unwrap_or(&root);
        if let Some(flag) = word.strip_prefix('-') {
            if word.contains('=') {
                continue;
            }
            if let Some(arg) = find_flag(&root, cmd, flag)
                && arg.get_action().takes_values()
            {
                pending_value = Some(arg);
            }
            continue;
        }
        if sub.is_none()
            && positionals == 0
            && let Some(s) = root.find_subcommand(word)
        {
            sub = Some(s.clone());
            continue;
        }
        positionals += 1;
    }
    let cmd = sub.as_ref().unwrap_or(&root);
    // The value of a flag: `--context <TAB>` or `--context=<TAB>`.
    let (value_of, prefix) = match (pending_value, current.split_once('=')) {
        (Some(arg), _) => (Some(arg), current),
        (None, Some((flag, value))) if flag.starts_with('-') => {
            (find_flag(&root, cmd, &flag[1..]), value)
        }
        _ => (None, current),
    };
    if let Some(arg) = value_of {
        let id = arg.get_id().as_str();
        return match id {
            "context" => Offer::Kubeconfig(KubeconfigList::Contexts),
            "cluster" => Offer::Kubeconfig(KubeconfigList::Clusters),
            "user" => Offer::Kubeconfig(KubeconfigList::Users),
            "namespace" => Offer::Namespaces,
            "kubeconfig" | "bundle" | "from_bundle" | "node_evidence" => Offer::Files,
            _ => {
                let values: Vec<String> = arg
                    .get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                    .map(|v| v.get_name().to_string())
                    .collect();
                Offer::Words(with_prefix(values, prefix))
            }
        };
    }
    if current.starts_with('-') {
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .chain(root.get_arguments().filter(|a| a.is_global_set()))
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        flags.sort();
        flags.dedup();
        return Offer::Words(with_prefix(flags, current));
    }
    let takes_node = match sub.as_ref().map(clap::Command::get_name) {
        None => positionals == 0,
        Some("pleg" | "version") => positionals == 0,
        Some(_) => false,
    };
    if !takes_node {
        return Offer::Words(Vec::new());
    }
    let subcommands = if sub.is_none() {
        root.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    } else {
        Vec::new()
    };
    Offer::NodesAnd(with_prefix(subcommands, current))
}

fn find_flag(root: &clap::Command, cmd: &clap::Command, flag: &str) -> Option<clap::Arg> {
    let matches = |a: &&clap::Arg| {
        if let Some(long) = flag.strip_prefix('-') {
            a.get_long() == Some(long)
                || a.get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&long))
        } else {
            flag.chars().count() == 1 && a.get_short() == flag.chars().next()
        }
    };
    cmd.get_arguments()
        .find(matches)
        .or_else(|| root.get_arguments().find(matches))
        .cloned()
}

fn with_prefix(mut words: Vec<String>, prefix: &str) -> Vec<String> {
    words.retain(|w| w.starts_with(prefix));
    words
}

/// The value of a connection flag among the typed words (`--context c` or `--context=c`).
fn flag_value(words: &[String], long: &str) -> Option<String> {
    let flag = format!("--{long}");
    let with_eq = format!("--{long}=");
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if *w == flag {
            return it.next().cloned();
        }
        if let Some(v) = w.strip_prefix(&with_eq) {
            return Some(v.to_string());
        }
    }
    None
}

fn kube_options(words: &[String]) -> KubeOptions {
    KubeOptions {
        kubeconfig: flag_value(words, "kubeconfig").map(PathBuf::from),
        context: flag_value(words, "context"),
        cluster: flag_value(words, "cluster"),
        user: flag_value(words, "user"),
        as_user: flag_value(words, "as"),
        as_groups: flag_value(words, "as-group").into_iter().collect(),
        timeout: CLUSTER_WAIT,
    }
}

/// The names of every object `api` lists (metadata only).
async fn names<K>(api: kube::Api<K>) -> Option<Vec<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect(),
    )
}

/// Names of nodes or namespaces starting with `prefix`; nothing when the cluster does not answer
/// in time (a TAB must not hang).
async fn from_cluster(words: &[String], namespaces: bool, prefix: &str) -> Vec<String> {
    use k8s_openapi::api::core::v1::{Namespace, Node};
    use kube::api::Api;
    let work = async {
        let target = crate::collect::connect(&kube_options(words)).await.ok()?;
        let client = target.client;
        if namespaces {
            names(Api::<Namespace>::all(client)).await
        } else {
            names(Api::<Node>::all(client)).await
        }
    };
    let names = tokio::time::timeout(CLUSTER_WAIT, work)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    with_prefix(names, prefix)
}

fn from_kubeconfig(words: &[String], list: KubeconfigList, prefix: &str) -> Vec<String> {
    let config = match flag_value(words, "kubeconfig") {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    };
    let Ok(config) = config else {
        return Vec::new();
    };
    let names = match list {
        KubeconfigList::Contexts => config.contexts.into_iter().map(|c| c.name).collect(),
        KubeconfigList::Clusters => config.clusters.into_iter().map(|c| c.name).collect(),
        KubeconfigList::Users => config.auth_infos.into_iter().map(|c| c.name).collect(),
    };
    with_prefix(names, prefix)
}

/// `kubectl-nodehealth __complete <words…>`: candidates on stdout in cobra's format.
pub fn main(words: Vec<String>) -> u8 {
    let current = words.last().cloned().unwrap_or_default();
    let value_prefix = current
        .split_once('=')
        .filter(|(f, _)| f.starts_with('-'))
        .map_or(current.as_str(), |(_, v)| v)
        .to_string();
    let (candidates, directive) = match plan(&words) {
        Offer::Words(w) => (w, NO_FILE_COMP),
        Offer::Files => (Vec::new(), DEFAULT_COMP),
        Offer::Kubeconfig(list) => (from_kubeconfig(&words, list, &value_prefix), NO_FILE_COMP),
        Offer::Namespaces | Offer::NodesAnd(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let mut out = Vec::new();
            if let Ok(rt) = runtime {
                match plan(&words) {
                    Offer::Namespaces => {
                        out = rt.block_on(from_cluster(&words, true, &value_prefix));
                    }
                    Offer::NodesAnd(first) => {
                        out = first;
                        out.extend(rt.block_on(from_cluster(&words, false, &current)));
                    }
                    _ => {}
                }
            }
            (out, NO_FILE_COMP)
        }
    };
    let mut stdout = std::io::stdout().lock();
    for c in candidates {
        let _ = writeln!(stdout, "{c}");
    }
    let _ = writeln!(stdout, ":{directive}");
    0
}

/// `completion <shell>`: the script on stdout.
pub fn script(shell: crate::cli::CompletionShell) -> String {
    use crate::cli::CompletionShell as S;
    let generator = match shell {
        S::Kubectl => return HELPER.to_string(),
        S::Bash => clap_complete::Shell::Bash,
        S::Zsh => clap_complete::Shell::Zsh,
        S::Fish => clap_complete::Shell::Fish,
        S::Powershell => clap_complete::Shell::PowerShell,
    };
    let mut out = Vec::new();
    let mut command = Cli::command().bin_name("kubectl-nodehealth");
    clap_complete::generate(generator, &mut command, "kubectl-nodehealth", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(words: &[&str]) -> Offer {
        plan(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn first_word_is_a_node_or_a_subcommand() {
        let Offer::NodesAnd(subs) = plan_of(&[""]) else {
            panic!("{:?}", plan_of(&[""]));
        };
        for s in ["scan", "pleg", "alerts", "cleanup", "version", "completion"] {
            assert!(subs.contains(&s.to_string()), "{s} in {subs:?}");
        }
        assert!(!subs.iter().any(|s| s.starts_with("__")), "{subs:?}");
        assert_eq!(plan_of(&["sc"]), Offer::NodesAnd(vec!["scan".into()]));
        // After a node, nothing positional is left.
        assert_eq!(plan_of(&["node-a", ""]), Offer::Words(vec![]));
        // pleg and version take a node; scan does not.
        assert_eq!(plan_of(&["pleg", ""]), Offer::NodesAnd(vec![]));
        assert_eq!(plan_of(&["version", "n"]), Offer::NodesAnd(vec![]));
        assert_eq!(plan_of(&["scan", ""]), Offer::Words(vec![]));
        // A flag's value is not a positional: the node is still to come.
        assert_eq!(
            plan_of(&["--context", "c", "--duration=5s", ""]),
            plan_of(&[""])
        );
    }

    #[test]
    fn flag_values_come_from_where_they_live() {
        assert_eq!(
            plan_of(&["--context", ""]),
            Offer::Kubeconfig(KubeconfigList::Contexts)
        );
        assert_eq!(
            plan_of(&["n", "--cluster="]),
            Offer::Kubeconfig(KubeconfigList::Clusters)
        );
        assert_eq!(plan_of(&["scan", "-n", ""]), Offer::Namespaces);
        assert_eq!(plan_of(&["--kubeconfig", ""]), Offer::Files);
        assert_eq!(
            plan_of(&["n", "-o", ""]),
            Offer::Words(vec![
                "table".into(),
                "wide".into(),
                "json".into(),
                "yaml".into()
            ])
        );
        assert_eq!(
            plan_of(&["n", "--output=j"]),
            Offer::Words(vec!["json".into()])
        );
        assert_eq!(
            plan_of(&["completion", "z"]),
            Offer::Words(vec![]),
            "a subcommand's own positionals are clap's business"
        );
    }

    #[test]
    fn flags_include_the_globals() {
        let Offer::Words(flags) = plan_of(&["scan", "--"]) else {
            panic!()
        };
        assert!(flags.contains(&"--selector".to_string()), "{flags:?}");
        assert!(flags.contains(&"--context".to_string()), "{flags:?}");
        assert!(!flags.contains(&"--trace".to_string()), "{flags:?}");
        let Offer::Words(flags) = plan_of(&["n", "--tr"]) else {
            panic!()
        };
        assert_eq!(flags, ["--trace", "--trace-uprobes"]);
    }

    #[test]
    fn connection_flags_are_read_from_the_typed_words() {
        let words: Vec<String> = ["--context=prod", "--kubeconfig", "/k", "--as", "jane", ""]
            .iter()
            .map(|w| w.to_string())
            .collect();
        let o = kube_options(&words);
        assert_eq!(o.context.as_deref(), Some("prod"));
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(o.as_user.as_deref(), Some("jane"));
    }

    #[test]
    fn scripts_are_generated_for_every_shell() {
        use crate::cli::CompletionShell as S;
        assert!(script(S::Bash).contains("kubectl-nodehealth"));
        assert!(script(S::Zsh).contains("#compdef"));
        assert!(script(S::Fish).contains("complete -c kubectl-nodehealth"));
        assert!(script(S::Powershell).contains("Register-ArgumentCompleter"));
        assert!(script(S::Kubectl).contains("__complete"));
    }
}
