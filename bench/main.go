// Command bench measures netprobe against the raw-socket baseline in one
// run, side by side, and prints each figure with its baseline and ratio:
//
//	go run ./bench
//
// It builds probed (and ghz, pinned in tools/ghz), runs it on loopback,
// and measures: the latency account of a lone Connect (where its time
// goes, from the execution tracer); Connect probes per second and latency against a bare
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
	// bareSleep, when set, makes the -bare-dial process sleep this long
	// before each dial (see sleptDials).
	bareSleep time.Duration
	// relayFrom and relayTo, when set, make this process the relay that
	// benchFetch runs apart (see relay).
	relayFrom, relayTo string
	// part and probed, when set, make this process measure one part with
	// that probed binary and print its rows as JSON (see run).
	part, probed string
	// ghz is the ghz binary for the ghz part.
	ghz string
	// naiveProber, when set, makes this process the naive prober that
	// benchGhz measures probed against (see startNaiveProber).
	naiveProber bool
	// gomaxprocs, when not 0, is every probed's GOMAXPROCS.
	gomaxprocs int
	// nodes are the fleet sizes the fanout part runs, one after another.
	nodes string
}

func main() {
	o, err := parseOptions(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	run := run
	switch {
	case o.bareDial != "":
		run = runBareDial
	case o.relayFrom != "":
		run = runRelay
	case o.naiveProber:
		run = runNaiveProber
	case o.part != "":
		run = runPart
	}
	err = run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseOptions reads the command line into options, and checks them:
// -only must name a part, so that a typo is not an empty table.
func parseOptions(args []string, output io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "how long each rate is measured")
	fs.Int64Var(&o.fetch, "fetch-bytes", 1<<30, "bytes relayed in the throughput test")
	fs.IntVar(&o.inflight, "inflight", 10000, "probes held in flight in the memory test")
	fs.StringVar(&o.only, "only", "", "run only this part: "+partNames())
	fs.StringVar(&o.nodes, "nodes", "50,200", "fleet sizes the fanout part runs, comma-separated: as many probed, each in a network namespace of its own (2-250; needs root)")
	fs.IntVar(&o.rounds, "rounds", 3, "runs of each rate and throughput, netprobe and baselines in turn; the median is reported")
	fs.StringVar(&o.bareDial, "bare-dial", "", "internal: dial+close ADDR in a loop from this process, print the figures as JSON")
	fs.IntVar(&o.workers, "workers", 1, "internal: dials in flight for -bare-dial")
	fs.DurationVar(&o.bareSleep, "bare-sleep", 0, "internal: sleep this long before each dial of -bare-dial, one at a time")
	fs.StringVar(&o.relayFrom, "relay-from", "", "internal: relay from this ADDR to -relay-to through user space, print how long it took")
	fs.StringVar(&o.relayTo, "relay-to", "", "internal: where -relay-from relays to")
	fs.BoolVar(&o.naiveProber, "naive-prober", false, "internal: serve a gRPC Connect that only dials and closes on loopback, print its address")
	fs.StringVar(&o.part, "part", "", "internal: measure this part in this process, print its rows as JSON")
	fs.StringVar(&o.probed, "probed", "", "internal: the probed binary for -part")
	fs.StringVar(&o.ghz, "ghz", "", "internal: the ghz binary for -part ghz")
	fs.IntVar(&o.gomaxprocs, "probed-gomaxprocs", 0, "run every probed with GOMAXPROCS set to this, to weigh a lone probe's latency against throughput (0: Go's default, the CPUs probed may use)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q: every option is a flag", fs.Args())
	case o.gomaxprocs < 0:
		return o, errors.New("-probed-gomaxprocs must be 0 or more")
	case o.rounds < 1:
		return o, errors.New("-rounds must be at least 1")
	case o.only != "" && !slices.ContainsFunc(parts, func(p part) bool { return p.name == o.only }):
		return o, fmt.Errorf("-only %q: no such part; the parts are %s", o.only, partNames())
	}
	return o, nil
}

// partNames lists the parts' names, for -only.
func partNames() string {
	var names []string
	for _, p := range parts {
		names = append(names, p.name)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// row is one line of the report.
type row struct {
	Figure, Netprobe, Baseline, Ratio, Note string
}

// part is one thing the bench measures.
type part struct {
	name string
	// network is where its probed and its load talk, as the report's
	// header says it.
	network string
	run     func(context.Context, probedBin, options) ([]row, error)
}

// The networks the parts run over.
const (
	overLoopback = "over loopback"
	overLAN      = "over a LAN of network namespaces, a probed in each"
)

// parts are what the bench measures, in order.
var parts = []part{
	{"latency", overLoopback, benchLatency}, {"connect", overLoopback, benchConnect}, {"ghz", overLoopback, benchGhz}, {"fetch", overLoopback, benchFetch},
	{"scrape", overLoopback, benchScrape}, {"inflight", overLoopback, benchInflight},
	{"fanout", overLAN, benchFanout},
}

// header is the report's first line, saying where the parts that run
// (o.only's, or all) measure: "connect, ghz, ... over loopback; fanout
// over a LAN ...".
func header(o options) string {
	var (
		where    []string
		names    []string
		previous string
	)
	flush := func() {
		if len(names) > 0 {
			where = append(where, strings.Join(names, ", ")+" "+previous)
		}
	}
	for _, p := range parts {
		if o.only != "" && o.only != p.name {
			continue
		}
		if p.network != previous {
			flush()
			names, previous = nil, p.network
		}
		names = append(names, p.name)
	}
	flush()
	return fmt.Sprintf("netprobe bench: %s, %d CPUs, %s/%s, probed and the load in one process tree: %s",
		runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.Join(where, "; "))
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
	fmt.Fprintf(out, "%s\n\n", header(o))

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
			"-fetch-bytes", strconv.FormatInt(o.fetch, 10), "-inflight", strconv.Itoa(o.inflight), "-nodes", o.nodes,
			"-probed-gomaxprocs", strconv.Itoa(o.gomaxprocs))
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
			rows, err := p.run(ctx, probedBin{o.probed, o.gomaxprocs}, o)
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
