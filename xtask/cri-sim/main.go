// Command cri-sim plays both ends of a CRI connection for tests of the node tracer, with the
// same Go stack as the real ones:
//
//	cri-sim serve -listen /path/to.sock -delay 300ms
//	    a grpc-go CRI RuntimeService (like containerd's) whose ListPodSandbox answers after
//	    -delay; Version answers at once; every other method is unimplemented.
//	cri-sim call -endpoint unix:///path/to.sock -calls 5
//	    k8s.io/cri-client — the kubelet's own CRI client (grpc-go, one long-lived connection,
//	    non-blocking reads and writes). Connects and makes one warm-up call (Version), prints "connected",
//	    waits for a line on stdin, then makes -calls ListPodSandbox calls one after another,
//	    printing "latency_ns <n>" for each (preceded by
//	    "error_after_ns <n> <error>" when it failed, e.g. past -timeout), then "done". The wait lets a test attach its tracer
//	    to an established connection, as the tracer meets a kubelet's.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cri-sim: "+format+"\n", args...)
	os.Exit(1)
}

type slowRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	delay time.Duration
}

// Version answers at once: k8s.io/cri-client calls it to validate the API when it connects.
func (s *slowRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "cri-sim", RuntimeVersion: "0.1.0", RuntimeApiVersion: "v1"}, nil
}

func (s *slowRuntime) ListPodSandbox(ctx context.Context, _ *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &runtimeapi.ListPodSandboxResponse{}, nil
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "unix socket path to listen on")
	delay := fs.Duration("delay", 0, "how long ListPodSandbox takes")
	fs.Parse(args)
	if *listen == "" {
		fail("serve: -listen /path is required")
	}
	l, err := net.Listen("unix", *listen)
	if err != nil {
		fail("listen %s: %v", *listen, err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, &slowRuntime{delay: *delay})
	fmt.Println("listening")
	if err := srv.Serve(l); err != nil {
		fail("serve: %v", err)
	}
}

func call(args []string) {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "CRI endpoint, unix:///path")
	calls := fs.Int("calls", 5, "ListPodSandbox calls after the go line")
	timeout := fs.Duration("timeout", 30*time.Second, "per-call timeout")
	fs.Parse(args)
	if *endpoint == "" {
		fail("call: -endpoint unix:///path is required")
	}
	rs, err := remote.NewRemoteRuntimeService(*endpoint, *timeout, noop.NewTracerProvider(), nil)
	if err != nil {
		fail("connect %s: %v", *endpoint, err)
	}
	one := func() time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		start := time.Now()
		_, err := rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{})
		took := time.Since(start)
		if err != nil {
			// A deadline the server does not meet is a result too: the caller sees the error line.
			fmt.Printf("error_after_ns %d %v\n", took.Nanoseconds(), err)
			return took
		}
		return took
	}
	// Warm up with Version (answers at once), so a slow ListPodSandbox starts only after "go".
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	if _, err := rs.Version(ctx, "v1"); err != nil {
		fail("Version: %v", err)
	}
	cancel()
	fmt.Println("connected")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(0)
	}
	for i := 0; i < *calls; i++ {
		took := one()
		fmt.Printf("latency_ns %d\n", took.Nanoseconds())
	}
	fmt.Println("done")
	// Linger so the connection's last frames (the reset of a call past its deadline, written
	// asynchronously by grpc-go) leave, as they do from a kubelet that keeps running.
	time.Sleep(500 * time.Millisecond)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: cri-sim serve|call [flags]")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "call":
		call(os.Args[2:])
	default:
		fail("unknown mode %q: serve or call", os.Args[1])
	}
}
