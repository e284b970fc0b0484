// Command k8sbin is one multi-call binary holding kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kubectl of Kubernetes
// v1.35.4 (one link instead of five). It picks the component from the name it was
// invoked as (symlinks kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet) or, failing
// that, from its first argument: `k8sbin kubelet --version`.
//
// Each case mirrors the upstream cmd/<component>/*.go main function of
// k8s.io/kubernetes v1.35.4 (app.New...Command + component-base/cli.Run).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	_ "time/tzdata" // for timeZone support in CronJob (apiserver, controller-manager)

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
}

func names() string {
	return "kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl"
}

// kubectl mirrors cmd/kubectl/kubectl.go: verbosity is parsed before the command is built, and
// errors are printed kubectl's way.
func kubectl() {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
		kubectlutil.CheckErr(err)
	}
	os.Exit(0)
}

func main() {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	if name == "kubectl" {
		kubectl()
	}
	if name != "kubectl" && len(os.Args) > 1 && os.Args[1] == "kubectl" {
		os.Args = append([]string{"kubectl"}, os.Args[2:]...)
		kubectl()
	}
	newCommand, ok := commands[name]
	if !ok && len(os.Args) > 1 {
		if newCommand, ok = commands[os.Args[1]]; ok {
			// Behave exactly as if invoked under that name.
			os.Args = append([]string{os.Args[1]}, os.Args[2:]...)
		}
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: %s <%s> [flags...]\n  (or invoke through a link named after the component)\n", name, names())
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
