package probecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/settings"
)

// The limits of a trace, as the API has them (TraceOptions): the CLI
// refuses more before it asks.
const (
	defaultMaxHops      = 30
	maxMaxHops          = 64
	maxProbesPerHop     = 10
	defaultTraceTimeout = 10 * time.Second
	// traceConnectTimeout bounds the connect that goes before probe
	// trace's trace: the probe's default timeout, or --timeout if less.
	traceConnectTimeout = 5 * time.Second
)

// traceFlags are probe trace's flags.
type traceFlags struct {
	maxHops, probes int
	timeout         time.Duration
	// timeoutGiven is set when --timeout (or its environment twin) was.
	timeoutGiven bool
	names        bool
}

func (a *app) traceCommand() *cobra.Command {
	var (
		tf targetFlags
		fl traceFlags
	)
	cmd := &cobra.Command{
		Use:   "trace HOST PORT|SERVICE | trace HOST:PORT",
		Short: "Trace the network path to a TCP or UDP target, hop by hop, as traceroute -T (-U) does",
		Long: `trace connects to the target as connect does (for at most 5s, or --timeout
if less), then follows the path to the address it connected to, or failed
at: TCP SYNs to that address and port with a TTL (IPv6 hop limit) of 1, 2, 3
and so on; with --udp, UDP datagrams (of two bytes: each probe's number,
which tells a late answer from the next probe's), as traceroute -U sends. It
prints a line per hop: the TTL, the address that answered and what it
answered (the router's ICMP time exceeded, an ICMP unreachable in words
with its type and code, or the target's own SYN-ACK, or RST from a closed
port; over UDP, its port unreachable from a closed port, or a datagram
from a port that answers), the round-trip time of each probe answered and, with
--probes above 1, the hop's loss. A last line says whether the target was
reached, or where the path stopped and why, and whether every probe went
on one flow: one local port throughout, so that routers that balance flows
over several paths (ECMP) sent them all one way (Paris traceroute).

The trace stops once the target answers, a hop answers unreachable, 5 hops
in a row do not answer at all, at --max-hops, or when --timeout, the
trace's budget, runs out. It needs no privilege where the probe server
runs, but it needs Linux there: elsewhere the path says so, with no hops.
An open UDP port that does not answer the probes' datagrams cannot be told
from a drop: its path ends in silence after the last router. With -o json
it prints the ConnectResponse, whose "path" is the trace.

With --names, each hop's address is looked up by address (PTR) where the
probe server runs, once the hops are found and within the trace's budget,
and printed as traceroute prints it: "r1.example.net (198.18.1.1)". Unlike
traceroute, probe trace does not look names up unless asked: a resolver
that does not answer would hold up every trace.

It exits 0 when the trace reached the target, SYN-ACK or RST (over UDP, a
port unreachable or a datagram); when it did not, with the connect's own
failure's code (28 for a timeout, 7 for an unreachable, ...), or 1 if the
connect succeeded (69 if the probe server cut the trace short as it shut
down).`,
		Example: `  probe trace example.com 443
  probe trace --probes 3 --max-hops 16 db.internal:5432
  probe trace -6 -o json example.com https
  probe trace --udp --probes 3 dns.internal 53
  probe trace --names example.com 443
  probe --server probed.internal trace db.internal 5432`,
		Args: positional(1, 2, "HOST PORT|SERVICE or HOST:PORT"),
		// Checked before anything is dialled: a --server is not asked for a
		// trace it would refuse.
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			fl.timeoutGiven = cmd.Flags().Changed("timeout")
			return fl.check()
		},
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			host, addr, _, err := targetArgs(args, 0, "HOST PORT|SERVICE or HOST:PORT")
			if err != nil {
				return err
			}
			connectTimeout := min(traceConnectTimeout, fl.timeout)
			opts := client.ConnectOptions{
				Timeout: connectTimeout,
				Trace:   &client.TraceOptions{Always: true, MaxHops: fl.maxHops, ProbesPerHop: fl.probes, Timeout: fl.timeout, Names: fl.names},
			}
			if !fl.timeoutGiven {
				// The server's defaults, the same but held to its
				// --max-timeout: a server whose maximum is less would
				// refuse 10s asked of it.
				opts.Timeout, opts.Trace.Timeout = 0, 0
			}
			cctx, cancel := context.WithTimeout(ctx, connectTimeout+fl.timeout+a.ServerTimeout)
			defer cancel()
			res, err := c.Connect(cctx, tf.network(), addr, opts)
			err = a.explainFamily(ctx, c, tf, host, err)
			if res == nil {
				return err
			}
			if a.Output == "json" {
				if err := writeJSON(a.out, res.Proto()); err != nil {
					return err
				}
			} else {
				if a.Verbose {
					printConnect(a.out, host, res, true)
				}
				if res.Path != nil {
					printHops(a.out, res.Path)
					fmt.Fprintln(a.out, pathSummary(res.Path))
				}
			}
			return traceOutcome(res.Path, tf.udp, err)
		}),
	}
	tf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&fl.maxHops, "max-hops", defaultMaxHops, fmt.Sprintf("highest TTL (IPv6 hop limit) tried, 1 to %d", maxMaxHops))
	f.BoolVar(&fl.names, "names", false, "look up each hop's name (PTR) where the probe server runs, within the trace's budget, and print it before the address")
	f.IntVar(&fl.probes, "probes", 1, fmt.Sprintf("probes sent each TTL, 1 to %d; more show each hop's loss, as mtr does (a probe not answered within 1s is lost)", maxProbesPerHop))
	// probe trace's --timeout is the trace's, in place of the global one.
	settings.DurationVar(f, &fl.timeout, "timeout", "", defaultTraceTimeout, "the trace's budget, after the connect: it ends with what it found. Left out, the probe server's 10s, or its --max-timeout if less; given, at most its --max-timeout (env NETPROBE_TIMEOUT)")
	return cmd
}

// check refuses flags out of the API's range, naming the flag.
func (f *traceFlags) check() error {
	if f.maxHops < 1 || f.maxHops > maxMaxHops {
		return usagef("--max-hops %d: want 1 to %d", f.maxHops, maxMaxHops)
	}
	if f.probes < 1 || f.probes > maxProbesPerHop {
		return usagef("--probes %d: want 1 to %d", f.probes, maxProbesPerHop)
	}
	if f.timeout <= 0 {
		return usagef("--timeout %v: must be positive", f.timeout)
	}
	return nil
}

// traceOutcome is probe trace's error: none when the path reached the
// target, else the connect's failure, or when the connect succeeded an
// error saying the trace did not get there.
func traceOutcome(path *client.Path, udp bool, connectErr error) error {
	switch {
	case path != nil && path.Reached:
		return nil
	case connectErr != nil:
		return connectErr
	case path == nil:
		// A probe that connected had an address: the service traces it.
		return errors.New("the probe server sent no path")
	case path.End == client.PathEndServerShutdown:
		return exitError{exitUnavailable, "trace: cut short: the probe server is shutting down"}
	case udp:
		// A UDP connect sends nothing: it has not got there either.
		return fmt.Errorf("trace: %s did not answer: an open UDP port may not answer a probe's datagram", path.Destination)
	}
	return fmt.Errorf("trace: %s did not reach the target, though the connect did", path.Destination)
}

// printHops writes a trace as traceroute does, a line per hop: its TTL,
// who answered, the round-trip times of the probes answered, the hop's
// loss when it was sent several, and what answered.
func printHops(w io.Writer, p *client.Path) {
	head := "trace to " + p.Destination.String()
	if p.Source.IsValid() {
		head += " from " + p.Source.String()
	}
	fmt.Fprintln(w, head)
	several := false
	for _, h := range p.Hops {
		several = several || h.Sent > 1
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, h := range p.Hops {
		addr := "*"
		switch {
		case h.Name != "":
			// As traceroute prints a hop it found a name for.
			addr = fmt.Sprintf("%s (%s)", client.Printable(h.Name), h.Addr)
		case h.Addr.IsValid():
			addr = h.Addr.String()
		}
		rtts := make([]string, len(h.RTTs))
		for i, d := range h.RTTs {
			rtts[i] = ms(d)
		}
		fmt.Fprintf(tw, "%2d\t%s\t%s\t", h.TTL, addr, strings.Join(rtts, " "))
		if several {
			fmt.Fprintf(tw, "lost %d of %d (%.0f%%)\t", h.Lost(), h.Sent, percent(h.Lost(), h.Sent))
		}
		// What answered comes last, as long as it takes, unpadded.
		fmt.Fprintln(tw, hopText(p, h))
	}
	tw.Flush()
}

// pathSummary is probe trace's last line: where the path ends, in what
// time of its budget, and whether its probes held to one flow.
func pathSummary(p *client.Path) string {
	var b strings.Builder
	if !p.Reached && len(p.Hops) > 0 {
		b.WriteString("not reached: ")
	}
	b.WriteString(pathEnd(p))
	fmt.Fprintf(&b, "; the trace took %s of %s", ms(p.Duration), p.Timeout)
	if len(p.Hops) > 0 {
		if p.FlowHeld {
			b.WriteString(", every probe on one flow (Paris)")
		} else {
			b.WriteString(", NOT on one flow: a probe had to leave from another port, so hops may be on different paths")
		}
	}
	return b.String()
}

// pathEnd says where a path ends and why: "reached 198.18.4.1:80 at hop
// 4 (SYN-ACK)", "last hop that answered: 198.18.2.1 (hop 2); nothing
// beyond it".
func pathEnd(p *client.Path) string {
	last, answered := p.LastAnswered()
	lastHop := "no hop answered"
	if answered {
		lastHop = fmt.Sprintf("last hop that answered: %s (hop %d)", last.Addr, last.TTL)
	}
	switch p.End {
	case client.PathEndReached:
		return fmt.Sprintf("reached %s at hop %d (%s)", p.Destination, last.TTL, hopText(p, last))
	case client.PathEndUnreachable:
		return fmt.Sprintf("%s (hop %d) answered %s", last.Addr, last.TTL, hopText(p, last))
	case client.PathEndSilence:
		return lastHop + "; nothing beyond it"
	case client.PathEndMaxHops:
		return fmt.Sprintf("%s; the target did not answer within %s", lastHop, plural(len(p.Hops), "hop"))
	case client.PathEndTimeout:
		return fmt.Sprintf("%s; the trace's %s ran out", lastHop, p.Timeout)
	case client.PathEndServerShutdown:
		return lastHop + "; the probe server cut the trace short as it shut down"
	case client.PathEndError, client.PathEndUnsupported:
		if p.Err != nil && p.Err.Reason == client.ReasonLimit {
			// Not a failure: a sweep's cap of traces was reached.
			return client.Printable(p.Err.Message)
		}
		return fmt.Sprintf("no trace: %v", p.Err)
	}
	return fmt.Sprintf("%s; the trace ended %v", lastHop, p.End)
}

// hopText says what answered a hop: "time exceeded", "unreachable:
// communication administratively prohibited (ICMP 3/13)", "SYN-ACK".
func hopText(p *client.Path, h client.Hop) string {
	v6 := p.Destination.Addr().Is6() && !p.Destination.Addr().Is4In6()
	icmp := "ICMP"
	if v6 {
		icmp = "ICMPv6"
	}
	code := fmt.Sprintf("(%s %d/%d)", icmp, h.ICMPType, h.ICMPCode)
	switch h.Answer {
	case client.HopAnswerNone:
		return "no answer"
	case client.HopAnswerSYNACK:
		return "SYN-ACK"
	case client.HopAnswerRST:
		return "RST: the port is closed"
	case client.HopAnswerPortUnreachable:
		return "port unreachable: the port is closed " + code
	case client.HopAnswerDatagram:
		return "a datagram: the port answered"
	case client.HopAnswerTimeExceeded:
		if !v6 && h.ICMPCode == 1 {
			return "fragment reassembly time exceeded " + code
		}
		return "time exceeded"
	case client.HopAnswerUnreachable:
		return icmpErrorWords(v6, h.ICMPType, h.ICMPCode) + " " + code
	}
	return h.Answer.String()
}

// icmpErrorWords names an ICMP (v6: ICMPv6) error that is not a time
// exceeded: "unreachable: communication administratively prohibited".
func icmpErrorWords(v6 bool, icmpType, icmpCode int) string {
	switch {
	case !v6 && icmpType == 3:
		return "unreachable: " + codeWords(icmp4Unreachable, icmpCode)
	case v6 && icmpType == 1:
		return "unreachable: " + codeWords(icmp6Unreachable, icmpCode)
	case !v6 && icmpType == 12, v6 && icmpType == 4:
		return "parameter problem"
	case v6 && icmpType == 2:
		return "packet too big"
	case !v6 && icmpType == 11, v6 && icmpType == 3:
		return "time exceeded"
	}
	return "an ICMP error"
}

// codeWords is the words for code in words, or the code by number.
func codeWords(words []string, code int) string {
	if code >= 0 && code < len(words) {
		return words[code]
	}
	return fmt.Sprintf("code %d", code)
}

// icmp4Unreachable names the codes of ICMP destination unreachable (type
// 3), RFC 792 and RFC 1812.
var icmp4Unreachable = []string{
	"network unreachable", "host unreachable", "protocol unreachable", "port unreachable",
	"fragmentation needed", "source route failed", "destination network unknown",
	"destination host unknown", "source host isolated", "network administratively prohibited",
	"host administratively prohibited", "network unreachable for TOS", "host unreachable for TOS",
	"communication administratively prohibited", "host precedence violation", "precedence cutoff in effect",
}

// icmp6Unreachable names the codes of ICMPv6 destination unreachable
// (type 1), RFC 4443.
var icmp6Unreachable = []string{
	"no route to destination", "communication administratively prohibited", "beyond scope of source address",
	"address unreachable", "port unreachable", "source address failed ingress/egress policy",
	"reject route to destination", "error in source routing header",
}

// tracedError is a probe's failure with the path its trace found, for
// connect --trace: the error's line is followed by one saying where the
// path stopped.
type tracedError struct {
	err  error
	pe   *client.ProbeError
	path *client.Path
}

func (e tracedError) Error() string { return e.err.Error() }
func (e tracedError) Unwrap() error { return e.err }

// where is "TIMEOUT at CONNECT; last hop that answered: 198.18.1.1 (hop
// 1); nothing beyond it".
func (e tracedError) where() string {
	return fmt.Sprintf("%s at %s; %s", strings.TrimPrefix(e.pe.Reason.String(), "REASON_"), strings.TrimPrefix(e.pe.Stage.String(), "STAGE_"), pathEnd(e.path))
}

// withPath returns err with the path of its probe's trace, when it has
// one.
func withPath(err error) error {
	var pe *client.ProbeError
	if !errors.As(err, &pe) || pe.Path == nil {
		return err
	}
	return tracedError{err: err, pe: pe, path: pe.Path}
}
