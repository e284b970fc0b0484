// Command etcd is upstream etcd's own main package (go.etcd.io/etcd/server/v3,
// main.go) verbatim: the version string comes from go.etcd.io/etcd/api/v3/version.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
