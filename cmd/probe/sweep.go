package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/service"
)

type sweepFlags struct {
	file        string
	srv         []string
	expand      bool
	udp         bool
	concurrency int
}

func (a *app) sweepCommand() *cobra.Command {
	var sf sweepFlags
	cmd := &cobra.Command{
		Use:   "sweep [HOST:PORT...]",
		Short: "Connect to many targets from one or many probe servers, as a matrix",
		Long: `sweep asks each probe server (--server, repeatable; dns:///NAME:PORT stands
for every address of NAME, each asked on its own) to connect to every target,
in one call per server, and prints a matrix: a row per target, a column per
server, each cell the outcome and the connect time. Targets come from the
arguments, --file (one HOST:PORT a line, # comments) and --srv names.

With -o json it prints one object per result as it comes:
{"server": "...", "result": SweepResponse}. The exit code is 0 when every
cell connected, else 10, after a summary line on stderr.`,
		Example: `  probe sweep 10.0.0.1:22 10.0.0.2:22 db.internal:5432
  probe sweep --file targets.txt -s dns:///probed.internal:7070
  probe sweep --srv _https._tcp.example.com --expand -o json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a.ran = true
			targets, err := sf.targets(args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout+10*time.Second)
			defer cancel()
			vantages, err := a.vantages(ctx)
			if err != nil {
				return err
			}
			defer func() {
				for _, v := range vantages {
					v.close()
				}
			}()
			return a.sweep(ctx, vantages, targets, sf.concurrency)
		},
	}
	f := cmd.Flags()
	f.StringVar(&sf.file, "file", "", `read targets from this file, one HOST:PORT a line ("-": stdin)`)
	f.StringArrayVar(&sf.srv, "srv", nil, "sweep the targets of this SRV name, such as _https._tcp.example.com (repeatable)")
	f.BoolVar(&sf.expand, "expand", false, "probe each address of a host name on its own, not the first that connects")
	f.BoolVar(&sf.udp, "udp", false, "connect with UDP (which only shows the route) instead of TCP")
	f.IntVar(&sf.concurrency, "concurrency", 16, "probes each server runs at once (it may cap this)")
	return cmd
}

// targets gathers the sweep's entries from the arguments, the file and the
// SRV names.
func (sf *sweepFlags) targets(args []string) ([]client.SweepTarget, error) {
	network := "tcp"
	if sf.udp {
		network = "udp"
	}
	expand := client.Expand(0)
	if sf.expand {
		expand = client.ExpandAddresses
	}
	addrs := slices.Clone(args)
	if sf.file != "" {
		r := io.Reader(os.Stdin)
		if sf.file != "-" {
			f, err := os.Open(sf.file)
			if err != nil {
				return nil, usageError{err}
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				addrs = append(addrs, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
	}
	var out []client.SweepTarget
	for _, addr := range addrs {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("target %q: want HOST:PORT ([IPv6]:PORT for an IPv6 address)", addr)
		}
		out = append(out, client.SweepTarget{Network: network, Address: addr, Expand: expand})
	}
	for _, name := range sf.srv {
		out = append(out, client.SweepTarget{Network: network, Address: name, Expand: client.ExpandSRV})
	}
	if len(out) == 0 {
		return nil, usagef("no targets: give HOST:PORT arguments, --file or --srv")
	}
	return out, nil
}

// vantage is one probe server a sweep asks.
type vantage struct {
	name   string
	client *client.Client
	close  func()
}

// vantages dials every --server, expanding dns:/// names to each of their
// addresses; with none, the service runs in this process.
func (a *app) vantages(ctx context.Context) ([]vantage, error) {
	if len(a.servers) == 0 {
		c, closeFn, err := inProcess(a.dnsServer)
		if err != nil {
			return nil, err
		}
		return []vantage{{name: "in-process", client: c, close: closeFn}}, nil
	}
	opts, err := a.dialOptions()
	if err != nil {
		return nil, usageError{err}
	}
	resolver := net.DefaultResolver
	if a.dnsServer != "" {
		resolver = service.ResolverFor(a.dnsServer)
	}
	var addrs []string
	for _, s := range a.servers {
		name, ok := strings.CutPrefix(s, "dns:///")
		if !ok {
			addrs = append(addrs, s)
			continue
		}
		host, port, err := net.SplitHostPort(name)
		if err != nil {
			return nil, usagef("--server %s: want dns:///NAME:PORT", s)
		}
		ips, err := resolver.LookupHost(ctx, host)
		if err != nil {
			return nil, usagef("--server %s: %v", s, err)
		}
		// Sorted, so the matrix's columns come in the same order each run.
		slices.Sort(ips)
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, port))
		}
	}
	// A sweep reads small results from what may be many servers: gRPC's
	// usual 32 KiB read buffer a connection, not the 1 MiB sized for a
	// Fetch's bulk data.
	opts = append(opts, client.WithGRPCOptions(grpc.WithReadBufferSize(32<<10)))
	var out []vantage
	for _, addr := range addrs {
		c, err := client.Dial(addr, opts...)
		if err != nil {
			return nil, usageError{err}
		}
		out = append(out, vantage{name: addr, client: c, close: func() { c.Close() }})
	}
	return out, nil
}

// cell is one target's outcome from one server.
type cell struct {
	text string
	ok   bool
}

// sweep asks every vantage point at once and prints the matrix, or JSON
// lines as results come.
func (a *app) sweep(ctx context.Context, vantages []vantage, targets []client.SweepTarget, concurrency int) error {
	type rowKey struct {
		index  int
		target string
	}
	var (
		rows []rowKey
		// cells holds a row's cells by server; a zero cell never came.
		cells    = map[rowKey][]cell{}
		failures []string
		done     int
	)
	clients := make([]*client.Client, len(vantages))
	for i, v := range vantages {
		clients[i] = v.client
	}
	total := len(targets) * len(vantages)
	progress := isTerminal(a.err) && a.output != "json"
	for fr := range client.SweepFleet(ctx, clients, targets, client.SweepOptions{Concurrency: concurrency, Timeout: a.timeout}) {
		name := vantages[fr.Server].name
		if fr.Err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", name, fr.Err))
			continue
		}
		r := fr.Result
		key := rowKey{r.Index, r.Target}
		if _, ok := cells[key]; !ok {
			cells[key] = make([]cell, len(vantages))
			rows = append(rows, key)
		}
		cells[key][fr.Server] = outcomeCell(r)
		done++
		switch {
		case a.output == "json":
			writeSweepJSON(a.out, name, r)
		case progress:
			// Expanded entries can make more results than entries.
			total = max(total, done)
			bar := strings.Repeat("#", 20*done/total) + strings.Repeat(".", 20-20*done/total)
			fmt.Fprintf(a.err, "\r[%s] %d/%d", bar, done, total)
		}
	}
	if progress {
		fmt.Fprint(a.err, "\r\033[K")
	}
	slices.SortStableFunc(rows, func(x, y rowKey) int { return x.index - y.index })

	failed := 0
	for _, row := range rows {
		for _, c := range cells[row] {
			if !c.ok {
				failed++
			}
		}
	}
	if a.output != "json" {
		color := isTerminal(a.out) && os.Getenv("NO_COLOR") == ""
		tw := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "target")
		for _, v := range vantages {
			fmt.Fprintf(tw, "\t%s", v.name)
		}
		fmt.Fprintln(tw)
		for _, row := range rows {
			fmt.Fprint(tw, row.target)
			for _, c := range cells[row] {
				if c.text == "" {
					c.text = "no answer"
				}
				fmt.Fprintf(tw, "\t%s", paint(c, color))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	for _, f := range failures {
		fmt.Fprintf(a.err, "probe: %s\n", f)
	}
	total = len(rows) * len(vantages)
	if failed > 0 || len(failures) > 0 {
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %d of %d probes failed (%d targets, %d servers)", failed, total, len(rows), len(vantages))}
	}
	fmt.Fprintf(a.err, "probe: sweep: all %d probes connected (%d targets, %d servers)\n", total, len(rows), len(vantages))
	return nil
}

// outcomeCell is a result as a cell: "ok 1.2ms", a reason, or abandoned.
func outcomeCell(r *client.SweepResult) cell {
	switch {
	case r.Abandoned:
		return cell{text: "abandoned"}
	case r.Err != nil:
		return cell{text: strings.TrimPrefix(r.Err.Reason.String(), "REASON_")}
	}
	return cell{text: "ok " + ms(r.Connect.ConnectDuration), ok: true}
}

// paint colours a cell for a terminal: green when it connected, red when
// not. Every cell carries escape codes of the same length, so the columns
// still line up.
func paint(c cell, color bool) string {
	if !color {
		return c.text
	}
	code := "31"
	if c.ok {
		code = "32"
	}
	return "\033[" + code + "m" + c.text + "\033[0m"
}

// writeSweepJSON writes one result as {"server": ..., "result": ...}.
func writeSweepJSON(w io.Writer, server string, r *client.SweepResult) {
	var result strings.Builder
	// A strings.Builder does not fail, and protojson cannot fail on a
	// message the server sent.
	_ = writeJSON(&result, r.Proto())
	name, _ := json.Marshal(server)
	fmt.Fprintf(w, "{\"server\":%s,\"result\":%s}\n", name, strings.TrimSpace(result.String()))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
