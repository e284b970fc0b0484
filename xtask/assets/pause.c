/* The sandbox ("pause") process of the local cluster's pods: holds the pod's namespaces and
 * sleeps until told to stop. Built statically by `cargo xtask cluster up` into a one-layer OCI
 * image named registry.k8s.io/pause:3.10, since this machine reaches no container registry. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
