package probecli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/service"
)

type sweepFlags struct {
	file        string
	srv         []string
	expand      bool
	udp         bool
	concurrency int
	deadline    time.Duration
	dialogue    dialogueFlags
	from        string
	quorum      int
	limit       int
	trace       bool
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

With --expect (and --send, --starttls) each probe also checks what the
service answers: a cell is ok once its last --expect matched.

Each probe is bounded by --timeout, whatever the sweep's length; --deadline
bounds the whole sweep, after which what is left comes back abandoned.
Interrupted (Ctrl-C), it prints every row, what had no answer yet as
interrupted, and exits 130.

With --from, the one --server asks the nodes of its fleet (probed --peers)
that the selector names, at most --limit of them (the server's default is
50: a line says when more matched), and the matrix has a column per node,
then a line per target: "reachable from 9 of 10 nodes". Nodes that share a
name are told apart as NAME@ADDRESS (the --server itself keeps NAME).
Without --quorum the exit code is 0 only when every node asked answered and
reached every target; --quorum N makes it 0 when every target is reached
from at least N nodes. A node whose results break the API makes it 10
either way. Without --deadline the sweep waits for every node asked.

With --trace, a probe that fails on the way to its target or at it is
followed by a trace of the path to the address it failed at, as connect
--trace makes one (a sweep runs 16 at most): after the matrix, a line for
each says where its path stopped, "198.18.4.1:82: TIMEOUT at CONNECT; last
hop that answered: 198.18.1.1 (hop 1); nothing beyond it". With -o json each
result's "connect" carries its "path".

With -o json it prints one object per result as it comes:
{"server": "...", "result": SweepResponse}, and for a server that could not
be asked {"server": "...", "error": {"code": ..., "message": ...}}. The exit
code is 0 when every cell connected, else 10, after a summary line on
stderr.`,
		Example: `  probe sweep 10.0.0.1:22 10.0.0.2:22 db.internal:5432 '[2001:db8::5]:443'
  probe sweep --file targets.txt -s dns:///probed.internal:7070
  probe sweep --srv _https._tcp.example.com --expand -o json --deadline 2m
  probe sweep -s probed.internal --from zone=eu-1 --quorum 2 db.internal:5432`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a.ran = true
			if sf.concurrency < 1 {
				return usagef("--concurrency %d: want 1 or more", sf.concurrency)
			}
			if sf.deadline < 0 {
				return usagef("--deadline %v: must be positive, or 0 for none", sf.deadline)
			}
			if sf.trace && sf.udp {
				return usagef("--trace follows TCP targets only: leave out --udp")
			}
			targets, err := sf.targets(args)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if sf.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, sf.deadline)
				defer cancel()
			}
			quorum, limit := cmd.Flags().Changed("quorum"), cmd.Flags().Changed("limit")
			switch {
			case quorum && sf.quorum < 1:
				return usagef("--quorum %d: want 1 or more nodes (without --quorum, every node asked must reach every target)", sf.quorum)
			case limit && (sf.limit < 1 || uint64(sf.limit) > math.MaxUint32):
				return usagef("--limit %d: want 1 or more nodes (without --limit, the server's default: 50)", sf.limit)
			case quorum && sf.from == "":
				return usagef("--quorum counts the nodes of --from: give --from")
			case limit && sf.from == "":
				return usagef("--limit counts the nodes of --from: give --from")
			case sf.from != "":
				from, err := client.ParseVantages(sf.from)
				if err != nil {
					return usagef("--from: %v", err)
				}
				if len(a.Servers) != 1 || strings.HasPrefix(a.Servers[0], "dns:///") {
					return usagef("--from asks one --server to probe from its fleet: give exactly one, HOST[:PORT]")
				}
				from.Limit = sf.limit
				return a.sweepFrom(ctx, from, targets, sf.concurrency, sf.quorum)
			}
			vantages, err := a.vantages(ctx)
			if err != nil {
				return err
			}
			defer func() {
				for _, v := range vantages {
					v.close()
				}
			}()
			return a.sweep(ctx, cmd.Context(), vantages, targets, sf.concurrency)
		},
	}
	f := cmd.Flags()
	f.StringVar(&sf.file, "file", "", `read targets from this file, one HOST:PORT a line, # comments ("-": stdin)`)
	f.StringArrayVar(&sf.srv, "srv", nil, "sweep the targets of this SRV name, such as _https._tcp.example.com (repeatable)")
	f.BoolVar(&sf.expand, "expand", false, "probe each address of a host name on its own, not the first that connects")
	f.BoolVar(&sf.udp, "udp", false, "connect with UDP (which only shows the route) instead of TCP")
	f.BoolVar(&sf.trace, "trace", false, "when a probe fails, trace the path to the address it failed at and say where it stopped (as connect --trace; 16 traces a sweep at most)")
	f.IntVar(&sf.concurrency, "concurrency", 16, "probes each server runs at once (it may cap this)")
	settings.DurationVar(f, &sf.deadline, "deadline", "", 0, "time the whole sweep may take; what is left then comes back abandoned (default: none, each probe bounded by --timeout)")
	f.StringVar(&sf.from, "from", "", `probe from the nodes of --server's fleet this selects: "all", "node=a,b", "zone=eu-1" (a label), or several joined by commas; a column per node. Without --deadline the sweep waits for every node asked: the server cuts one that falls silent after about 20 s`)
	f.IntVar(&sf.quorum, "quorum", 0, "with --from: exit 0 only when every target is reached from at least this many nodes (default: every node asked must answer and reach every target)")
	f.IntVar(&sf.limit, "limit", 0, "with --from: ask at most this many of the nodes it selects, the --server first when selected, then the others by name (default: the server's, 50; probed's --max-fanout caps it, 500 by default)")
	sf.dialogue.register(cmd)
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
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line != "" {
				addrs = append(addrs, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
	}
	steps, err := sf.dialogue.steps()
	if err != nil {
		return nil, err
	}
	if len(steps) > 0 && steps[len(steps)-1].Expect == "" {
		return nil, usagef("a sweep's dialogue is a check: end it with an --expect")
	}
	var trace *client.TraceOptions
	if sf.trace {
		// The service's defaults.
		trace = &client.TraceOptions{}
	}
	var out []client.SweepTarget
	for _, addr := range addrs {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			if b, ok := bracketed(addr); ok {
				return nil, usagef("target %q: an IPv6 address and a port are written %s", addr, b)
			}
			return nil, usagef("target %q: want HOST:PORT ([IPv6]:PORT for an IPv6 address)", addr)
		}
		if err := checkUTF8("target", addr); err != nil {
			return nil, err
		}
		out = append(out, client.SweepTarget{Network: network, Address: addr, Expand: expand, Steps: steps, Trace: trace})
	}
	for _, name := range sf.srv {
		if name == "" {
			return nil, usagef("--srv is empty: give a name such as _https._tcp.example.com")
		}
		if err := checkUTF8("--srv", name); err != nil {
			return nil, err
		}
		out = append(out, client.SweepTarget{Network: network, Address: name, Expand: client.ExpandSRV, Steps: steps, Trace: trace})
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
	if len(a.Servers) == 0 {
		c, closeFn, err := a.inProcess()
		if err != nil {
			return nil, err
		}
		return []vantage{{name: "in-process", client: c, close: closeFn}}, nil
	}
	resolver := net.DefaultResolver
	if a.DNSServer != "" {
		resolver = service.ResolverFor(a.DNSServer)
	}
	var addrs []string
	for _, s := range a.Servers {
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
	// Fetch's bulk data. A sweep has no deadline unless asked: keepalive
	// pings notice a server that stops answering, no sooner than probed's
	// --keepalive-min-time allows.
	grpcOpts := client.WithGRPCOptions(
		grpc.WithReadBufferSize(32<<10),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: a.ServerTimeout, PermitWithoutStream: true}),
	)
	var out []vantage
	for _, addr := range addrs {
		// A token goes to a local server without TLS: each server is
		// judged on its own.
		opts, err := a.dialOptions(addr)
		var c *client.Client
		if err == nil {
			c, err = client.Dial(addr, append(opts, grpcOpts)...)
		}
		if err != nil {
			for _, v := range out {
				v.close()
			}
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

// indexed is a line about a sweep's entry index.
type indexed struct {
	index int
	text  string
}

// row is a line of the matrix: an entry, or one target an expanded entry
// stood for.
type row struct {
	label string
	cells []cell
}

// sweep checks every vantage point, asks those that answer at once, and
// prints the matrix, or JSON lines as results come. ctx bounds the sweep
// (--deadline); cmdCtx ends when the user interrupts.
func (a *app) sweep(ctx, cmdCtx context.Context, vantages []vantage, targets []client.SweepTarget, concurrency int) error {
	type rowKey struct {
		index  int
		target string
	}
	rows := map[rowKey]*row{}
	var order []rowKey
	addRow := func(key rowKey, label string) *row {
		r := &row{label: label, cells: make([]cell, len(vantages))}
		rows[key] = r
		order = append(order, key)
		return r
	}
	for i, t := range targets {
		addRow(rowKey{i, ""}, t.Address)
	}
	var (
		failures []string
		// wheres say where the paths of failed probes stopped (--trace),
		// by entry.
		wheres   []indexed
		rejected error
		done     int
	)
	// Servers that do not answer a health check are not asked.
	asked := a.checkVantages(ctx, vantages, func(i int, err error) {
		failures = append(failures, serverFailure(vantages[i].name, err))
		a.sweepError(vantages[i].name, err)
	})
	clients := make([]*client.Client, len(asked))
	for i, v := range asked {
		clients[i] = vantages[v].client
	}
	total := len(targets) * len(vantages)
	progress := isTerminal(a.err) && a.Output != "json"
	for fr := range client.SweepFleet(ctx, clients, targets, client.SweepOptions{Concurrency: concurrency, Timeout: a.Timeout}) {
		server := asked[fr.Server]
		name := vantages[server].name
		if fr.Err != nil {
			if status.Code(fr.Err) == codes.InvalidArgument && rejected == nil {
				rejected = fr.Err
			}
			if cmdCtx.Err() == nil {
				failures = append(failures, serverFailure(name, fr.Err))
				a.sweepError(name, fr.Err)
			}
			continue
		}
		r := fr.Result
		key := rowKey{r.Index, ""}
		if targets[r.Index].Expand != 0 {
			key.target = r.Target
			if _, ok := rows[key]; !ok {
				addRow(key, targets[r.Index].Address+" -> "+r.Target)
			}
		}
		rows[key].cells[server] = outcomeCell(r)
		if r.Err != nil && r.Err.Path != nil {
			who := r.Target
			if len(vantages) > 1 {
				who += " from " + name
			}
			wheres = append(wheres, indexed{r.Index, fmt.Sprintf("%s: %s", who, tracedError{pe: r.Err, path: r.Err.Path}.where())})
		}
		done++
		switch {
		case a.Output == "json":
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
	if rejected != nil {
		// The request itself is wrong: every server says the same.
		return rejected
	}
	interrupted := cmdCtx.Err() != nil
	missing := "no answer"
	if interrupted {
		missing = "interrupted"
	}
	// An expanded entry with results has rows of its own.
	expanded := map[int]bool{}
	for _, k := range order {
		if k.target != "" {
			expanded[k.index] = true
		}
	}
	var lines []*row
	slices.SortStableFunc(order, func(x, y rowKey) int { return x.index - y.index })
	failed, answered := 0, 0
	for _, k := range order {
		if k.target == "" && expanded[k.index] {
			continue
		}
		r := rows[k]
		for i := range r.cells {
			switch c := &r.cells[i]; {
			case c.text == "":
				c.text = missing
				failed++
			case !c.ok:
				failed++
				answered++
			default:
				answered++
			}
		}
		lines = append(lines, r)
	}
	if a.Output != "json" {
		a.printMatrix(vantages, lines)
		slices.SortStableFunc(wheres, func(x, y indexed) int { return x.index - y.index })
		for _, w := range wheres {
			fmt.Fprintf(a.err, "probe: %s\n", w.text)
		}
	}
	for _, f := range failures {
		fmt.Fprintf(a.err, "probe: %s\n", f)
	}
	total = len(lines) * len(vantages)
	scope := fmt.Sprintf("(%s, %s)", plural(len(lines), "target"), plural(len(vantages), "server"))
	switch {
	case interrupted:
		return exitError{exitInterrupted, fmt.Sprintf("sweep: interrupted: %d of %s answered, %d failed or left %s", answered, plural(total, "probe"), failed, scope)}
	case failed > 0 || len(failures) > 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %d of %s failed %s", failed, plural(total, "probe"), scope)}
	}
	if total == 1 {
		fmt.Fprintf(a.err, "probe: sweep: the probe connected %s\n", scope)
	} else {
		fmt.Fprintf(a.err, "probe: sweep: all %d probes connected %s\n", total, scope)
	}
	return nil
}

// checkVantages asks every vantage point's health, at once and within
// --server-timeout, and returns the indexes of those SERVING; failed is
// told of the others.
func (a *app) checkVantages(ctx context.Context, vantages []vantage, failed func(int, error)) []int {
	if len(vantages) == 1 && vantages[0].name == "in-process" {
		return []int{0}
	}
	errs := make([]error, len(vantages))
	var wg sync.WaitGroup
	for i, v := range vantages {
		wg.Go(func() { errs[i] = a.checkServer(ctx, v.client) })
	}
	wg.Wait()
	var ok []int
	for i, err := range errs {
		if err != nil {
			failed(i, err)
			continue
		}
		ok = append(ok, i)
	}
	return ok
}

// printMatrix prints the rows as a table, a column per server, coloured
// on a terminal. Widths count what shows, not the colours' escape codes.
func (a *app) printMatrix(vantages []vantage, rows []*row) {
	color := isTerminal(a.out) && a.getenv("NO_COLOR") == ""
	widths := make([]int, len(vantages)+1)
	widths[0] = len("target")
	for i, v := range vantages {
		widths[i+1] = width(v.name)
	}
	for _, r := range rows {
		widths[0] = max(widths[0], width(r.label))
		for i, c := range r.cells {
			widths[i+1] = max(widths[i+1], width(c.text))
		}
	}
	var b strings.Builder
	line := func(texts []string, paint func(i int, s string) string) {
		for i, t := range texts {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := ""
			if i < len(texts)-1 {
				pad = strings.Repeat(" ", widths[i]-width(t))
			}
			b.WriteString(paint(i, t) + pad)
		}
		b.WriteByte('\n')
	}
	plain := func(_ int, s string) string { return s }
	header := []string{"target"}
	for _, v := range vantages {
		header = append(header, v.name)
	}
	line(header, plain)
	for _, r := range rows {
		texts := []string{r.label}
		for _, c := range r.cells {
			texts = append(texts, c.text)
		}
		line(texts, func(i int, s string) string {
			if i == 0 || !color {
				return s
			}
			return paint(r.cells[i-1], s)
		})
	}
	fmt.Fprint(a.out, b.String())
}

// width is the columns s takes on a terminal: one a rune. The matrix
// holds ASCII but for the µ of microseconds, two bytes in one column.
func width(s string) int { return utf8.RuneCountInString(s) }

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

// paint colours text for a terminal: green when the cell connected, red
// when not.
func paint(c cell, text string) string {
	code := "31"
	if c.ok {
		code = "32"
	}
	return "\033[" + code + "m" + text + "\033[0m"
}

// sweepError writes, with -o json, a line for a server that could not be
// asked: {"server": ..., "error": {"code": ..., "message": ...}}.
func (a *app) sweepError(server string, err error) {
	if a.Output != "json" {
		return
	}
	st := status.Convert(err)
	line, _ := json.Marshal(map[string]any{"server": server, "error": map[string]string{"code": st.Code().String(), "message": st.Message()}})
	fmt.Fprintf(a.out, "%s\n", line)
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

// serverFailure says why a probe server failed a sweep, as the other
// commands say it of theirs.
func serverFailure(name string, err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("probe server %s: %s: %s", name, st.Code(), client.Printable(st.Message()))
	}
	return fmt.Sprintf("probe server %s: %s", name, client.Printable(err.Error()))
}
