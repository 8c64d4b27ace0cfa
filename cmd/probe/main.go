// Command probe is netprobe's command line: it asks a probe server to
// connect to a target, exchange bytes with it, or look a service up, and
// prints what happened. With no --server it runs the same service in its
// own process. See internal/probecli.
package main

import (
	"os"

	"github.com/netprobe/netprobe/internal/probecli"
)

func main() { os.Exit(probecli.Main()) }
