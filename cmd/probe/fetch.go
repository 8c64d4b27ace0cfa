package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

type fetchFlags struct {
	targetFlags
	handshake   handshakeFlags
	data        string
	dataFile    string
	lines       bool
	maxBytes    uint64
	readTimeout time.Duration
	reverse     bool
	quiet       bool
}

func (a *app) fetchCommand() *cobra.Command {
	var ff fetchFlags
	cmd := &cobra.Command{
		Use:   "fetch HOST PORT|SERVICE [PATH]",
		Short: "Connect, send a request, and print the reply as it arrives",
		Long: `fetch connects like "probe connect", sends a request, half-closes its side,
and copies the target's reply to stdout as it arrives, like a classic socket
client. The request is an HTTP/1.0 GET of PATH (with a Host header naming
HOST, or --sni, unless HOST is an address), or the raw bytes of --data or
--data-file, or nothing (to read a banner).

Events (where it connected, the timings, how the reply ended) go to stderr,
one line each, unless --quiet. With -o json, stdout instead carries the
service's messages, one per line: the connect report, each piece of data
(base64), and the summary.`,
		Example: `  probe fetch 127.0.0.1 8080 /healthz
  probe fetch mail.example.com smtp
  printf 'PING\r\n' | probe fetch --data-file - redis.internal 6379
  probe fetch --udp --data-file query.bin --read-timeout 1s ns1.internal domain`,
		Args: positional(2, 3, "HOST PORT|SERVICE [PATH]"),
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			addr, err := address(args[0], args[1])
			if err != nil {
				return err
			}
			opts, err := ff.options(a, args)
			if err != nil {
				return err
			}
			f, err := c.Fetch(ctx, ff.network(), addr, opts)
			if err != nil {
				var pe *client.ProbeError
				if errors.As(err, &pe) {
					a.fetchFailed(args[0], pe, ff.quiet)
				}
				return unknownPort(err, args[1])
			}
			defer f.Close()
			return a.copyReply(args[0], f, ff.quiet)
		}),
	}
	ff.register(cmd)
	return cmd
}

func (ff *fetchFlags) register(cmd *cobra.Command) {
	ff.targetFlags.register(cmd)
	ff.handshake.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&ff.data, "data", "d", "", "send these bytes as they are instead of an HTTP GET")
	f.StringVar(&ff.dataFile, "data-file", "", `send the contents of this file ("-": stdin) instead of an HTTP GET`)
	f.BoolVar(&ff.lines, "lines", false, "have the server send the reply line by line (TCP; with -o json, one data object per line)")
	f.Uint64Var(&ff.maxBytes, "max-bytes", 0, "stop after this many bytes of reply (default: the server's cap, 64 MiB for probed's default)")
	f.DurationVar(&ff.readTimeout, "read-timeout", 0, "end when the reply stops for this long: a RECEIVE timeout for TCP, a clean end for UDP (default: only --timeout)")
	f.BoolVarP(&ff.reverse, "reverse", "r", false, "look the peer address up by address (PTR) once connected")
	f.BoolVarP(&ff.quiet, "quiet", "q", false, "print only the reply and errors, no event lines")
	cmd.MarkFlagsMutuallyExclusive("data", "data-file")
}

// options builds the request from the flags and the optional PATH.
func (ff *fetchFlags) options(a *app, args []string) (client.FetchOptions, error) {
	opts := client.FetchOptions{
		Timeout:       a.timeout,
		ReadTimeout:   ff.readTimeout,
		MaxBytes:      ff.maxBytes,
		ReverseLookup: ff.reverse,
	}
	if ff.lines {
		opts.Framing = client.FramingLines
	}
	tlsOpts, err := ff.handshake.options()
	if err != nil {
		return opts, err
	}
	opts.TLS = tlsOpts
	hasPath := len(args) == 3
	switch {
	case hasPath && (ff.data != "" || ff.dataFile != ""):
		return opts, usagef("PATH asks for an HTTP GET; --data and --data-file send raw bytes instead: give one or the other")
	case hasPath:
		// The Host header names the site, as curl sends it: the TLS server
		// name, or else HOST when it is a name.
		host := ff.handshake.sni
		if _, err := netip.ParseAddr(args[0]); host == "" && err != nil {
			host = args[0]
		}
		opts.HTTPGet = &client.HTTPGet{Path: args[2], Host: host}
	case ff.data != "":
		opts.Payload = []byte(ff.data)
	case ff.dataFile == "-":
		b, err := io.ReadAll(a.in)
		if err != nil {
			return opts, fmt.Errorf("read stdin: %w", err)
		}
		opts.Payload = b
	case ff.dataFile != "":
		b, err := os.ReadFile(ff.dataFile)
		if err != nil {
			return opts, usageError{err}
		}
		opts.Payload = b
	}
	return opts, nil
}

// copyReply copies the reply to stdout as it arrives, or writes each
// message as JSON, and reports how it ended.
func (a *app) copyReply(host string, f *client.Fetch, quiet bool) error {
	if a.output == "json" {
		if err := writeJSON(a.out, connectEvent(f.Connect)); err != nil {
			return err
		}
	} else if !quiet {
		printConnect(a.err, host, f.Connect)
	}
	data := &netprobev1.FetchData{}
	msg := &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: data}}
	for {
		b, err := f.Next()
		if errors.Is(err, io.EOF) {
			return a.fetchEnded(f.Summary(), quiet)
		}
		if err != nil {
			// The failure is what the exit code reports, even if stdout
			// failed too.
			_ = a.fetchEnded(f.Summary(), quiet)
			return err
		}
		if a.output == "json" {
			data.Data = b
			err = writeJSON(a.out, msg)
		} else {
			_, err = a.out.Write(b)
		}
		if err != nil {
			return fmt.Errorf("write stdout: %w", err)
		}
	}
}

// fetchEnded reports the summary, when the stream got as far as one.
func (a *app) fetchEnded(s *client.FetchSummary, quiet bool) error {
	switch {
	case s == nil:
	case a.output == "json":
		return writeJSON(a.out, &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Summary{Summary: s.Proto()}})
	case !quiet:
		printSummary(a.err, s)
	}
	return nil
}

// fetchFailed reports a fetch that failed before any data: the connect
// report and, for JSON, the summary.
func (a *app) fetchFailed(host string, pe *client.ProbeError, quiet bool) {
	switch {
	case pe.Connect == nil:
	case a.output == "json":
		// The probe's failure is what the exit code reports.
		_ = writeJSON(a.out, connectEvent(pe.Connect))
		_ = a.fetchEnded(pe.Summary, quiet)
	case !quiet:
		printConnect(a.err, host, pe.Connect)
	}
}

func connectEvent(r *client.ConnectResult) *netprobev1.FetchResponse {
	return &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Connect{Connect: r.Proto()}}
}
