package probecli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/service"
)

// minPingInterval is the least -i: ping's own floor for users without
// privilege (200ms) is there so that nobody floods a network by mistake;
// probe sends one echo at a time and waits for each, and 10ms keeps a
// typo from becoming a busy loop against the target and the server.
const minPingInterval = 10 * time.Millisecond

// pingFlags are probe ping's own flags, ping's where they can be: -s is
// the global --server, so the size is --size.
type pingFlags struct {
	tf           targetFlags
	count        int
	interval     time.Duration
	size         int
	ttl          int
	dontFragment bool
	source       string
}

func (a *app) pingCommand() *cobra.Command {
	var pf pingFlags
	cmd := &cobra.Command{
		Use:   "ping HOST",
		Short: "Send ICMP echoes to a host, as ping does",
		Long: fmt.Sprintf(`ping sends ICMP echo requests to HOST (ICMPv6 for an IPv6 address) from where
the probe service runs, one every --interval, each waiting --timeout for its
reply (the next echo waits for the last one's reply or timeout), and prints a line for each as ping does: the reply's size, address,
TTL and round-trip time, or why none came, in the service's words (stage
ECHO, reason TIMEOUT; an ICMP unreachable with its sender and code). It
sends until interrupted, or --count echoes, then prints ping's summary:
transmitted, received, loss, and round-trip min/avg/max/mdev.

The service sends from an unprivileged ICMP datagram socket where the
system allows its group one (Linux's sysctl net.ipv4.ping_group_range),
else from a raw socket when it has CAP_NET_RAW; with neither, the echo
fails at stage SOCKET with a message naming both.

The exit status is ping's: 0 when any echo was answered; when none was, the
last failure's code (28 for a timeout, 7 for an unreachable or a socket
the system denies, 6 for a name that did not resolve, 55 for an echo that
could not be sent, such as one over the path's MTU with --dont-fragment),
or 130 when interrupted before any reply. A call the probe server refuses
(its policy, a limit) sends nothing and ends the run, with 77.

-s is --server here as in every command: the payload size is --size (%d
bytes by default, at most %d).`, service.DefaultEchoPayloadBytes, service.MaxEchoPayloadBytes),
		Example: `  probe ping -c 3 127.0.0.1
  probe ping -6 -c 5 -i 200ms db.internal
  probe ping --size 1472 --dont-fragment -c 1 10.0.0.1
  probe --server probed.internal ping -c 10 10.0.0.1`,
		Args: positional(1, 1, "HOST"),
		// Checked before a --server is dialled or anything is sent.
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := net.SplitHostPort(args[0]); err == nil {
				return fmt.Errorf("%s: ping takes a HOST, without a port", args[0])
			}
			return pf.check(cmd.Flags().Changed)
		},
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			return a.ping(ctx, c, &pf, strings.TrimSuffix(strings.TrimPrefix(args[0], "["), "]"))
		}),
	}
	f := cmd.Flags()
	pf.tf.registerFamily(cmd)
	f.IntVarP(&pf.count, "count", "c", 0, "stop after this many echoes (default: until interrupted)")
	settings.DurationVar(f, &pf.interval, "interval", "i", time.Second, fmt.Sprintf("time between the starts of two echoes, at least %v; an echo waiting for its reply holds the next back (against a host that does not answer, one goes out every --timeout)", minPingInterval))
	f.IntVar(&pf.size, "size", service.DefaultEchoPayloadBytes, fmt.Sprintf("bytes of data in each echo, 1 to %d", service.MaxEchoPayloadBytes))
	f.IntVarP(&pf.ttl, "ttl", "t", 0, "the echoes' TTL (IPv6 hop limit), 1 to 255 (default: the system's, 64 on Linux)")
	f.BoolVarP(&pf.dontFragment, "dont-fragment", "D", false, "send the echoes unfragmented (IPv4's DF bit, as BSD ping's -D; iputils' -M do): one larger than the path's MTU fails")
	f.StringVar(&pf.source, "source", "", "send from this local address (a --server must allow it: probed --allow-source)")
	return cmd
}

// check refuses flags out of range, before anything is sent; changed
// says whether a flag was given.
func (pf *pingFlags) check(changed func(flag string) bool) error {
	if pf.count < 0 || pf.count == 0 && changed("count") {
		return fmt.Errorf("--count %d: want 1 or more (leave it out to send until interrupted)", pf.count)
	}
	if pf.interval < minPingInterval {
		return fmt.Errorf("--interval %v: want %v or more", pf.interval, minPingInterval)
	}
	if pf.size < 1 || pf.size > service.MaxEchoPayloadBytes {
		return fmt.Errorf("--size %d: want 1 to %d bytes", pf.size, service.MaxEchoPayloadBytes)
	}
	if changed("ttl") && (pf.ttl < 1 || pf.ttl > 255) {
		return fmt.Errorf("--ttl %d: want 1 to 255", pf.ttl)
	}
	if pf.source != "" {
		if _, err := netip.ParseAddr(pf.source); err != nil {
			return fmt.Errorf("--source %q: want an IP address", pf.source)
		}
	}
	return nil
}

// network is the client's network name: icmp, icmp4 or icmp6.
func (pf *pingFlags) network() string {
	switch {
	case pf.tf.ipv4:
		return "icmp4"
	case pf.tf.ipv6:
		return "icmp6"
	}
	return "icmp"
}

// pingStyle prints a run of echoes as ping does, and ends it as ping
// does: a success when any echo was answered.
var pingStyle = repeatStyle{
	// Each line names its echo itself, as ping's do.
	label: func(int) string { return "" },
	summary: func(host string, sent, failed int, times []time.Duration) string {
		s := fmt.Sprintf("--- %s ping statistics ---\n%d packets transmitted, %d received, %.0f%% packet loss", host, sent, sent-failed, percent(failed, sent))
		if len(times) > 0 {
			lo, avg, hi, mdev := stats(times)
			s += fmt.Sprintf("\nrtt min/avg/max/mdev = %s/%s/%s/%s", ms(lo), ms(avg), ms(hi), ms(mdev))
		}
		return s
	},
	anyAnswer:    true,
	inFlightSent: true,
	onlySent:     true,
}

// ping sends the echoes to host and prints them.
func (a *app) ping(ctx context.Context, c *client.Client, pf *pingFlags, host string) error {
	opts := client.ConnectOptions{
		Timeout: a.Timeout,
		ICMP:    &client.ICMPOptions{PayloadBytes: pf.size, DontFragment: pf.dontFragment, TTL: pf.ttl},
	}
	if pf.source != "" {
		opts.Source = netip.MustParseAddr(pf.source) // check parsed it
	}
	seq := 0
	return a.repeatAs(ctx, repeatFlags{count: pf.count, interval: pf.interval}, host, pingStyle, func(ctx context.Context) outcome {
		seq++
		cctx, cancel := a.callContext(ctx)
		defer cancel()
		res, err := c.Connect(cctx, pf.network(), host, opts)
		if err != nil && !isProbeError(err) {
			// The server refused the call (the policy, a limit, a bad
			// request): no echo went out, and the run ends saying why as
			// every command does.
			return outcome{err: err, stop: true}
		}
		if err != nil {
			var pe *client.ProbeError
			o := outcome{err: echoError{seq: seq, err: err}}
			if res != nil {
				o.json = res.Proto()
			}
			// The service's own system denies it the socket, or found no
			// address: the next echo would fare no better.
			o.stop = errors.As(err, &pe) && (pe.Stage == client.StageSocket || pe.Stage == client.StageResolve || pe.Stage == client.StagePolicy)
			return o
		}
		r := res.ICMP
		return outcome{
			took: r.RTT,
			line: fmt.Sprintf("%d bytes from %s: icmp_seq=%d ttl=%d time=%s", r.PayloadBytes+8, r.ReplyAddr, seq, r.ReplyTTL, ms(r.RTT)),
			json: res.Proto(),
		}
	})
}

// echoError is an echo that got no reply: which one, and why, in the
// service's words, with the ICMP error that came back and the message
// of a socket the system denied (which names the sysctl to change).
type echoError struct {
	seq int
	err error
}

func (e echoError) Error() string {
	var pe *client.ProbeError
	if !errors.As(e.err, &pe) {
		return fmt.Sprintf("icmp_seq=%d: %s", e.seq, client.Printable(e.err.Error()))
	}
	switch {
	case pe.ICMP != nil:
		v6 := pe.ICMP.From.Is6() && !pe.ICMP.From.Is4In6()
		icmp := "ICMP"
		if v6 {
			icmp = "ICMPv6"
		}
		from := "an unnamed sender"
		if pe.ICMP.From.IsValid() {
			from = pe.ICMP.From.String()
		}
		return fmt.Sprintf("icmp_seq=%d: %s answered %s (%s %d/%d); %v", e.seq, from, icmpErrorWords(v6, pe.ICMP.Type, pe.ICMP.Code), icmp, pe.ICMP.Type, pe.ICMP.Code, pe)
	case pe.Stage == client.StageSocket && errors.Is(pe, syscall.EACCES) && pe.Message != "":
		return fmt.Sprintf("icmp_seq=%d: %v: %s", e.seq, pe, client.Printable(pe.Message))
	}
	return fmt.Sprintf("icmp_seq=%d: %v", e.seq, pe)
}

func (e echoError) Unwrap() error { return e.err }
