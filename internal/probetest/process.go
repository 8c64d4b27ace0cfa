package probetest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	done   chan struct{}

	mu sync.Mutex
	// logged counts the log lines by message; changed is closed and
	// replaced when it grows.
	logged  map[string]int
	changed chan struct{}
	// audit are the last auditKept audit lines ("probe"), decoded.
	audit []map[string]any
	// longest is the length of the longest log line so far.
	longest int
}

// LongestLine returns the length of the longest line probed has logged so
// far. (A line over 1 MiB ends the reading of the log: no line after it
// is counted.)
func (p *Probed) LongestLine() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.longest
}

// auditKept bounds the audit lines a Probed keeps: the bench makes
// hundreds of thousands.
const auditKept = 10000

// Audit returns the audit lines ("probe") probed has logged so far, the
// last 10,000 at most, each as its JSON fields.
func (p *Probed) Audit() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.audit)
}

// Logged counts the lines probed has logged with the message msg so far.
func (p *Probed) Logged(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logged[msg]
}

// WaitLog waits until probed has logged a line whose message is msg,
// and reports whether it did within Timeout.
func (p *Probed) WaitLog(msg string) bool {
	deadline := time.After(Timeout)
	for {
		p.mu.Lock()
		n, changed := p.logged[msg], p.changed
		p.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-changed:
		case <-p.done:
			return false
		case <-deadline:
			return false
		}
	}
}

// Launch runs cmd (probed, maybe inside a namespace) with JSON logs and its
// metrics on a port of its own (unless cmd sets --metrics-addr), and waits
// for its "serving" line. Its log is read and dropped.
func Launch(cmd *exec.Cmd) (*Probed, error) {
	cmd.Args = append(cmd.Args, "--log-format=json")
	if !slices.ContainsFunc(cmd.Args, func(a string) bool { return strings.HasPrefix(a, "--metrics-addr") }) {
		cmd.Args = append(cmd.Args, "--metrics-addr=127.0.0.1:0")
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Probed{Cmd: cmd, Exited: make(chan error, 1), done: make(chan struct{}), logged: map[string]int{}, changed: make(chan struct{})}
	serving := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line struct {
				Msg, Addr   string
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Msg == "serving" {
				p.Addr, p.MetricsAddr = line.Addr, line.MetricsAddr
				close(serving)
			}
			p.mu.Lock()
			if line.Msg == "probe" {
				var fields map[string]any
				json.Unmarshal(sc.Bytes(), &fields)
				if len(p.audit) == auditKept {
					p.audit = p.audit[1:]
				}
				p.audit = append(p.audit, fields)
			}
			p.logged[line.Msg]++
			p.longest = max(p.longest, len(sc.Bytes()))
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
		p.Exited <- cmd.Wait()
	}()
	select {
	case <-serving:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("probed exited before serving: %w", <-p.Exited)
	case <-time.After(Timeout):
		p.Stop()
		return nil, errors.New("probed did not start serving")
	}
}

// Stop kills the process and waits for it to end.
func (p *Probed) Stop() {
	p.Cmd.Process.Kill()
	<-p.done
}

// StartProbed launches probed as Launch does, for the length of the test:
// it is killed, and waited for, if the test leaves it running, since a
// probed left running would keep its network namespace alive.
func StartProbed(t testing.TB, cmd *exec.Cmd) *Probed {
	t.Helper()
	p, err := Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
