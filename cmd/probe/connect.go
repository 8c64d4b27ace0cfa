package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
)

func (a *app) connectCommand() *cobra.Command {
	var (
		tf      targetFlags
		reverse bool
		hs      handshakeFlags
	)
	cmd := &cobra.Command{
		Use:   "connect HOST PORT|SERVICE",
		Short: "Connect to a target and report the addresses and timings",
		Long: `connect resolves HOST, connects to PORT (or the port of SERVICE, such as
"https") on each address in turn, Happy Eyeballs style, and reports where it
connected and how long each phase took. The connection is closed at once.`,
		Example: `  probe connect localhost 22
  probe connect -6 example.com https -o json
  probe --server probed.internal:7070 connect db.internal 5432`,
		Args: positional(2, 2, "HOST PORT|SERVICE"),
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			addr, err := address(args[0], args[1])
			if err != nil {
				return err
			}
			tlsOpts, err := hs.options()
			if err != nil {
				return err
			}
			res, err := c.Connect(ctx, tf.network(), addr, client.ConnectOptions{Timeout: a.timeout, ReverseLookup: reverse, TLS: tlsOpts})
			if res != nil {
				if a.output == "json" {
					if err := writeJSON(a.out, res.Proto()); err != nil {
						return err
					}
				} else {
					printConnect(a.out, args[0], res)
				}
			}
			return unknownPort(err, args[1])
		}),
	}
	tf.register(cmd)
	cmd.Flags().BoolVarP(&reverse, "reverse", "r", false, "look the peer address up by address (PTR) once connected")
	hs.register(cmd)
	return cmd
}

// unknownPort makes a service lookup failure of a connect or fetch a usage
// error: the PORT argument named no service the server knows.
func unknownPort(err error, port string) error {
	var pe *client.ProbeError
	if errors.As(err, &pe) && pe.Stage == client.StageServiceLookup {
		return usageError{fmt.Errorf("PORT %q is no port number and no service the probe server knows: %w", port, err)}
	}
	return err
}

// handshakeFlags ask for a TLS handshake with the target.
type handshakeFlags struct {
	handshake bool
	sni       string
	alpn      []string
	trust     string
	inspect   bool
}

func (h *handshakeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&h.handshake, "handshake", false, "do a TLS handshake once connected and report the certificate (implied by the flags below)")
	f.StringVar(&h.sni, "sni", "", "server name to send and verify (default: HOST when it is a name)")
	f.StringSliceVar(&h.alpn, "alpn", nil, "application protocols to offer, such as h2,http/1.1")
	f.StringVar(&h.trust, "trust", "", "trust the CAs in this PEM file for the target's certificate, instead of the probe server's system roots")
	f.BoolVar(&h.inspect, "inspect", false, "report the certificate even when it does not verify, instead of failing")
}

// options returns the TLS options, or nil for no handshake.
func (h *handshakeFlags) options() (*client.TLSOptions, error) {
	if !h.handshake && h.sni == "" && len(h.alpn) == 0 && h.trust == "" && !h.inspect {
		return nil, nil
	}
	o := &client.TLSOptions{ServerName: h.sni, ALPN: h.alpn, InsecureSkipVerify: h.inspect}
	if h.trust != "" {
		pem, err := os.ReadFile(h.trust)
		if err != nil {
			return nil, usageError{fmt.Errorf("--trust: %w", err)}
		}
		o.CABundle = pem
	}
	return o, nil
}
