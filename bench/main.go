// Command bench measures netprobe against the raw-socket baseline in one
// run, side by side, and prints each figure with its baseline and ratio:
//
//	go run ./bench
//
// It builds probed (and ghz, pinned in tools/ghz), runs it on loopback,
// and measures: Connect probes per second and latency against a bare
// dial+close loop, from its own client and from ghz; Fetch throughput
// against a bare user-space relay; /probe scrapes a second against
// blackbox_exporter's (when installed); memory, goroutines and descriptors with
// 10,000 probes in flight, and after they are cancelled; the server's
// allocations per Connect; and a Sweep fanned out from 50, then 200, probed,
// each in a network namespace of its own (root only), against the nodes' own
// sweeps. It exits non-zero if a figure cannot be measured. It is not a gate
// on speed: machines differ.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

type options struct {
	duration time.Duration
	fetch    int64
	inflight int
	only     string
	rounds   int
	// bareDial, when set, makes this process the bare dialer that
	// benchConnect runs apart from the target (see bareApart).
	bareDial string
	workers  int
	// relayFrom and relayTo, when set, make this process the relay that
	// benchFetch runs apart (see relay).
	relayFrom, relayTo string
	// part and probed, when set, make this process measure one part with
	// that probed binary and print its rows as JSON (see run).
	part, probed string
	// ghz is the ghz binary for the ghz part.
	ghz string
	// nodes are the fleet sizes the fanout part runs, one after another.
	nodes string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "how long each rate is measured")
	flag.Int64Var(&o.fetch, "fetch-bytes", 1<<30, "bytes relayed in the throughput test")
	flag.IntVar(&o.inflight, "inflight", 10000, "probes held in flight in the memory test")
	flag.StringVar(&o.only, "only", "", "run only this part: connect, ghz, fetch, scrape, inflight or fanout")
	flag.StringVar(&o.nodes, "nodes", "50,200", "fleet sizes the fanout part runs, comma-separated: as many probed, each in a network namespace of its own (2-250; needs root)")
	flag.IntVar(&o.rounds, "rounds", 3, "runs of each rate and throughput, netprobe and baselines in turn; the median is reported")
	flag.StringVar(&o.bareDial, "bare-dial", "", "internal: dial+close ADDR in a loop from this process, print the figures as JSON")
	flag.IntVar(&o.workers, "workers", 1, "internal: dials in flight for -bare-dial")
	flag.StringVar(&o.relayFrom, "relay-from", "", "internal: relay from this ADDR to -relay-to through user space, print how long it took")
	flag.StringVar(&o.relayTo, "relay-to", "", "internal: where -relay-from relays to")
	flag.StringVar(&o.part, "part", "", "internal: measure this part in this process, print its rows as JSON")
	flag.StringVar(&o.probed, "probed", "", "internal: the probed binary for -part")
	flag.StringVar(&o.ghz, "ghz", "", "internal: the ghz binary for -part ghz")
	flag.Parse()
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	run := run
	switch {
	case o.bareDial != "":
		run = runBareDial
	case o.relayFrom != "":
		run = runRelay
	case o.part != "":
		run = runPart
	}
	err := run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// row is one line of the report.
type row struct {
	Figure, Netprobe, Baseline, Ratio, Note string
}

// parts are what the bench measures, in order.
var parts = []struct {
	name string
	run  func(context.Context, string, options) ([]row, error)
}{
	{"connect", benchConnect}, {"ghz", benchGhz}, {"fetch", benchFetch}, {"scrape", benchScrape}, {"inflight", benchInflight},
	{"fanout", benchFanout},
}

func run(ctx context.Context, o options, out io.Writer) error {
	dir, err := os.MkdirTemp("", "netprobe-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "probed")
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/netprobe/netprobe/cmd/probed").CombinedOutput(); err != nil {
		return fmt.Errorf("go build probed: %w\n%s", err, b)
	}
	ghz := ""
	if o.only == "" || o.only == "ghz" {
		if ghz, err = ghzBuild(ctx, dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "netprobe bench: %s, %d CPUs, %s/%s, probed and the load in one process tree over loopback\n\n",
		runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)

	// Each part runs in a process of its own, so that what one part
	// leaves in the load's process (its heap, its goroutines) cannot weigh
	// on the next.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var rows []row
	for _, p := range parts {
		if o.only != "" && o.only != p.name {
			continue
		}
		cmd := exec.CommandContext(ctx, self, "-part", p.name, "-probed", bin, "-ghz", ghz,
			"-duration", o.duration.String(), "-rounds", strconv.Itoa(o.rounds),
			"-fetch-bytes", strconv.FormatInt(o.fetch, 10), "-inflight", strconv.Itoa(o.inflight), "-nodes", o.nodes)
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		var r []row
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w: %q", p.name, err, b)
		}
		rows = append(rows, r...)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tnetprobe\tbaseline\tratio\tnote")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Figure, r.Netprobe, r.Baseline, r.Ratio, r.Note)
	}
	return tw.Flush()
}

// runPart is the -part side of run.
func runPart(ctx context.Context, o options, out io.Writer) error {
	for _, p := range parts {
		if p.name == o.part {
			rows, err := p.run(ctx, o.probed, o)
			if err != nil {
				return err
			}
			return json.NewEncoder(out).Encode(rows)
		}
	}
	return fmt.Errorf("no part %q", o.part)
}

// loop runs op from workers goroutines for d and returns the rate and the
// sorted latencies. Operations are not cut short: each worker stops
// starting new ones once d has passed.
func loop(ctx context.Context, workers int, d time.Duration, op func(context.Context) error) (float64, []time.Duration, error) {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
		wg        sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range workers {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil && time.Now().Before(end) {
				t := time.Now()
				if err := op(ctx); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					break
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, nil, firstErr
	}
	if len(latencies) == 0 {
		return 0, nil, errors.New("no operation completed")
	}
	slices.Sort(latencies)
	return float64(len(latencies)) / elapsed.Seconds(), latencies, nil
}

func cmpErr(have, err error) error {
	if have != nil {
		return have
	}
	return err
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// median is the middle of xs (the upper one of an even count).
func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func ratio(a, b float64) string { return fmt.Sprintf("%.2f", a/b) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(bytes int64, d time.Duration) float64 { return float64(bytes) / (1 << 20) / d.Seconds() }

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
