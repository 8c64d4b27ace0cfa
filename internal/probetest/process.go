package probetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// GoBuild builds the main package pkg into dir, with goFlags before the
// package (such as -modfile), and returns the binary's path. It is for
// TestMain: the binary then serves every test of the package.
func GoBuild(dir, pkg string, goFlags ...string) (string, error) {
	bin := filepath.Join(dir, path.Base(pkg))
	args := append([]string{"build", "-o", bin}, goFlags...)
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Probed is a running probed process.
type Probed struct {
	// Cmd is the process.
	Cmd *exec.Cmd
	// Addr is the gRPC address it serves on, and MetricsAddr its metrics
	// address, from its "serving" log line.
	Addr, MetricsAddr string
	// Exited receives the process's exit error (nil for status 0).
	Exited chan error
}

// StartProbed runs cmd (probed, maybe inside a namespace) with JSON logs and
// its metrics on a port of its own (unless cmd sets --metrics-addr), and
// waits for its "serving" line. The process is killed, and waited for, if
// the test leaves it running.
func StartProbed(t testing.TB, cmd *exec.Cmd) *Probed {
	t.Helper()
	cmd.Args = append(cmd.Args, "--log-format=json")
	if !slices.ContainsFunc(cmd.Args, func(a string) bool { return strings.HasPrefix(a, "--metrics-addr") }) {
		cmd.Args = append(cmd.Args, "--metrics-addr=127.0.0.1:0")
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Probed{Cmd: cmd, Exited: make(chan error, 1)}
	serving := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg, Addr   string
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				p.MetricsAddr = line.MetricsAddr
				serving <- line.Addr
			}
		}
		io.Copy(io.Discard, stderr)
		p.Exited <- cmd.Wait()
	}()
	// A probed left running would keep its network namespace alive.
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	select {
	case p.Addr = <-serving:
	case err := <-p.Exited:
		t.Fatalf("probed exited before serving: %v", err)
	case <-time.After(Timeout):
		t.Fatal("probed did not start serving")
	}
	return p
}
