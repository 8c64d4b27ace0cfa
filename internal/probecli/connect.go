package probecli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
)

func (a *app) connectCommand() *cobra.Command {
	var (
		tf      targetFlags
		reverse bool
		trace   bool
		hs      handshakeFlags
		rf      repeatFlags
	)
	cmd := &cobra.Command{
		Use:   "connect HOST PORT|SERVICE | connect HOST:PORT",
		Short: "Connect to a target and report the addresses and timings",
		Long: `connect resolves HOST, connects to PORT (or the port of SERVICE, such as
"https") on each address in turn, Happy Eyeballs style, and reports where it
connected and how long each phase took. The connection is closed at once.

The target is HOST PORT, HOST:PORT, [IPV6]:PORT or [IPV6] PORT. With
--count it probes again and again, --interval apart, a line each, and ends
with a summary like ping's.

With --trace, a probe that fails on the way to its target or at it (stages
CONNECT, TLS_HANDSHAKE) is followed by a trace of the path to the address it
failed at, as probe trace makes one (30 hops at most, a probe each, within
10s): its hops are printed, and after the error a line says where the path
stopped: "TIMEOUT at CONNECT; last hop that answered: 198.18.2.1 (hop 2);
nothing beyond it". With -o json the response's "path" is the trace.`,
		Example: `  probe connect localhost 22
  probe connect '[::1]:6379'
  probe connect -6 example.com https -o json
  probe connect --count 0 --interval 500ms db.internal:5432
  probe connect --trace --timeout 2s db.internal 5432
  probe --server probed.internal connect db.internal 5432`,
		Args: positional(1, 2, "HOST PORT|SERVICE or HOST:PORT"),
		// Checked before a --server is dialled.
		PreRunE: func(*cobra.Command, []string) error {
			if trace && tf.udp {
				return errors.New("--trace traces a connect that failed, and a UDP connect sends nothing to fail: use probe trace --udp")
			}
			return nil
		},
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			host, addr, _, err := targetArgs(args, 0, "HOST PORT|SERVICE or HOST:PORT")
			if err != nil {
				return err
			}
			tlsOpts, err := hs.options()
			if err != nil {
				return err
			}
			source, err := hs.sourceAddr()
			if err != nil {
				return err
			}
			opts := client.ConnectOptions{Timeout: a.Timeout, ReverseLookup: reverse, TLS: tlsOpts, Source: source}
			callTimeout := a.Timeout + a.ServerTimeout
			if trace {
				// The service's defaults; the call waits for them too.
				opts.Trace = &client.TraceOptions{}
				callTimeout += defaultTraceTimeout
			}
			connect := func(ctx context.Context) (*client.ConnectResult, error) {
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				res, err := c.Connect(cctx, tf.network(), addr, opts)
				return res, withPath(err)
			}
			if rf.repeating() {
				return a.repeat(ctx, rf, addr, func(ctx context.Context) outcome {
					res, err := connect(ctx)
					o := outcome{err: err}
					if res != nil {
						o.took, o.line = res.ConnectDuration, fmt.Sprintf("connected to %s in %s", res.RemoteAddr, ms(res.ConnectDuration))
						o.json = res.Proto()
					}
					return o
				})
			}
			res, err := connect(ctx)
			err = a.explainFamily(ctx, c, tf, host, err)
			if res != nil {
				if a.Output == "json" {
					if err := writeJSON(a.out, res.Proto()); err != nil {
						return err
					}
				} else {
					printConnect(a.out, host, res, a.Verbose)
					if res.Path != nil {
						printHops(a.out, res.Path)
					}
				}
			}
			return err
		}),
	}
	tf.register(cmd)
	cmd.Flags().BoolVarP(&reverse, "reverse", "r", false, "look the peer address up by address (PTR) once connected")
	cmd.Flags().BoolVar(&trace, "trace", false, "when the probe fails, trace the path to the address it failed at and say where it stopped (as probe trace, with its defaults: up to 30 hops and 10s more after --timeout)")
	hs.register(a, cmd)
	rf.register(cmd)
	return cmd
}

// handshakeFlags ask for a TLS handshake with the target, and say how to
// reach it: from which source address.
type handshakeFlags struct {
	a         *app
	handshake bool
	sni       string
	alpn      []string
	trust     string
	inspect   bool
	min, max  string
	identity  string
	source    string
}

func (h *handshakeFlags) register(a *app, cmd *cobra.Command) {
	h.a = a
	f := cmd.Flags()
	f.BoolVar(&h.handshake, "handshake", false, "do a TLS handshake once connected and report the certificate (implied by the flags below)")
	f.StringVar(&h.sni, "sni", "", "server name to send and verify (default: HOST when it is a name)")
	f.StringSliceVar(&h.alpn, "alpn", nil, "application protocols to offer, such as h2,http/1.1")
	f.StringVar(&h.trust, "trust", "", "trust the CAs in this PEM file for the target's certificate, instead of the probe server's system roots")
	f.BoolVar(&h.inspect, "inspect", false, "report the certificate even when it does not verify, instead of failing")
	f.StringVar(&h.min, "tls-min", "", "lowest TLS version to offer: 1.0, 1.1, 1.2 (the default) or 1.3")
	f.StringVar(&h.max, "tls-max", "", "highest TLS version to offer: 1.0 to 1.3 (the default)")
	f.StringVar(&h.identity, "identity", "", "present this client identity of the --server's (probed --client-identity) when the target asks for a certificate")
	f.StringVar(&a.targetCert, "cert", "", "in-process: present this client certificate (PEM) when the target asks for one; --key is its key")
	f.StringVar(&a.targetKey, "key", "", "in-process: the private key (PEM) of --cert")
	f.StringVar(&h.source, "source", "", "connect from this local address (a --server must allow it: probed --allow-source)")
}

// tlsVersions are the --tls-min and --tls-max values.
var tlsVersions = map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// inProcessIdentity is the name under which the in-process service holds
// --cert and --key.
const inProcessIdentity = "cli"

// options returns the TLS options, or nil for no handshake.
func (h *handshakeFlags) options() (*client.TLSOptions, error) {
	if (h.a.targetCert == "") != (h.a.targetKey == "") {
		return nil, usagef("--cert and --key go together")
	}
	if h.a.targetCert != "" && h.a.server != "" {
		return nil, usagef("--cert and --key are for the in-process service; a --server holds its own client identities: --identity NAME")
	}
	if h.identity != "" && h.a.server == "" {
		return nil, usagef("--identity names a client identity of a --server's; without one, give the certificate itself: --cert FILE --key FILE")
	}
	if !h.handshake && h.sni == "" && len(h.alpn) == 0 && h.trust == "" && !h.inspect && h.min == "" && h.max == "" && h.identity == "" && h.a.targetCert == "" {
		return nil, nil
	}
	o := &client.TLSOptions{ServerName: h.sni, ALPN: h.alpn, InsecureSkipVerify: h.inspect, ClientIdentity: h.identity}
	if h.a.targetCert != "" {
		o.ClientIdentity = inProcessIdentity
	}
	for flag, v := range map[string]string{"--tls-min": h.min, "--tls-max": h.max} {
		if v == "" {
			continue
		}
		n, ok := tlsVersions[v]
		if !ok {
			return nil, usagef("%s %q: want 1.0, 1.1, 1.2 or 1.3", flag, v)
		}
		if flag == "--tls-min" {
			o.MinVersion = n
		} else {
			o.MaxVersion = n
		}
	}
	if h.trust != "" {
		pem, err := os.ReadFile(h.trust)
		if err != nil {
			return nil, usageError{fmt.Errorf("--trust: %w", err)}
		}
		o.CABundle = pem
	}
	return o, nil
}

// sourceAddr is --source, parsed.
func (h *handshakeFlags) sourceAddr() (netip.Addr, error) {
	if h.source == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(h.source)
	if err != nil {
		return a, usagef("--source %q: want an IP address", h.source)
	}
	return a, nil
}
