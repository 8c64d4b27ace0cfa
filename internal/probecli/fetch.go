package probecli

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
	handshake     handshakeFlags
	repeat        repeatFlags
	data          string
	dataFile      string
	lines         bool
	maxBytes      uint64
	readTimeout   time.Duration
	reverse       bool
	quiet         bool
	keepWriteOpen bool
	failEmpty     bool
	noStdin       bool
	trace         bool
	dialogue      dialogueFlags
}

func (a *app) fetchCommand() *cobra.Command {
	var ff fetchFlags
	cmd := &cobra.Command{
		Use:   "fetch HOST PORT|SERVICE [PATH] | fetch HOST:PORT [PATH]",
		Short: "Connect, send a request, and print the reply as it arrives",
		Long: `fetch connects like "probe connect", sends a request, half-closes its side
(unless --keep-write-open), and copies the target's reply to stdout as it
arrives, like a classic socket client. The request is an HTTP/1.0 GET of
PATH (with a Host header naming HOST, or --sni, unless HOST is an address),
or the raw bytes of --data or --data-file, or the dialogue of --send,
--expect and --starttls.

Stdin is the request only when none of those is given, -n is not, and
stdin is not a terminal (printf 'PING\r\n' | probe fetch ...); else
nothing is sent, to read a banner. In a loop that reads its list from
stdin (while read h; do probe fetch -n "$h" 22; done < hosts), -n keeps
probe from reading the rest of the list, as ssh -n does.

Events (where it connected, the timings, how the reply ended) go to stderr,
one line each, unless --quiet. With -o json, stdout instead carries the
service's messages, one per line: the connect report, each piece of data
(base64), and the summary. With --count it fetches again and again, a line
each without the reply, and ends with a summary like ping's.

With --trace, a fetch that fails once it has an address (a refused or
timed-out connect, a handshake, a reply that stopped or did not match) is
followed by a trace of the path to that address, as probe trace makes one
(30 hops at most, a probe each, within 10s): the hops, then a line saying
where the path stopped. With -o json the summary's "path" is the trace.`,
		Example: `  probe fetch 127.0.0.1 8080 /healthz
  probe fetch mail.example.com smtp
  printf 'PING\r\n' | probe fetch redis.internal:6379
  probe fetch --udp --data-file query.bin --read-timeout 1s ns1.internal domain
  probe fetch --count 10 --fail-empty 127.0.0.1:8080 /
  probe fetch --trace --timeout 2s web.internal 80 /`,
		Args: positional(1, 3, "HOST PORT|SERVICE [PATH] or HOST:PORT [PATH]"),
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			host, addr, rest, err := targetArgs(args, 1, "HOST PORT|SERVICE [PATH] or HOST:PORT [PATH]")
			if err != nil {
				return err
			}
			opts, err := ff.options(a, host, rest)
			if err != nil {
				return err
			}
			if ff.repeat.repeating() {
				return a.repeat(ctx, ff.repeat, addr, func(ctx context.Context) outcome {
					return a.fetchOnce(ctx, c, ff, addr, opts)
				})
			}
			cctx, cancel := ff.callContext(a, ctx)
			defer cancel()
			f, err := c.Fetch(cctx, ff.network(), addr, opts)
			if err != nil {
				var pe *client.ProbeError
				if errors.As(err, &pe) {
					a.fetchFailed(host, pe, ff.quiet)
				}
				return a.explainFamily(ctx, c, ff.targetFlags, host, withPath(err))
			}
			defer f.Close()
			return a.copyReply(host, f, ff)
		}),
	}
	ff.register(a, cmd)
	return cmd
}

// callContext bounds one call: the probe, the server's answer and, with
// --trace, the trace (the service's default budget).
func (ff *fetchFlags) callContext(a *app, ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := a.Timeout + a.ServerTimeout
	if ff.trace {
		timeout += defaultTraceTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// fetchOnce fetches and drops the reply, for a repeated run.
func (a *app) fetchOnce(ctx context.Context, c *client.Client, ff fetchFlags, addr string, opts client.FetchOptions) outcome {
	ctx, cancel := ff.callContext(a, ctx)
	defer cancel()
	f, err := c.Fetch(ctx, ff.network(), addr, opts)
	if err != nil {
		return outcome{err: withPath(err)}
	}
	defer f.Close()
	for err == nil {
		_, err = f.Next()
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	s := f.Summary()
	if err == nil && ff.failEmpty && s.BytesReceived == 0 && s.EndReason == client.EndEOF {
		err = errEmptyReply
	}
	o := outcome{err: withPath(err)}
	if s != nil {
		o.took, o.json = s.TotalDuration, s.Proto()
		o.line = fmt.Sprintf("%s from %s in %s", plural(int(s.BytesReceived), "byte"), f.Connect.RemoteAddr, ms(s.TotalDuration))
		if s.TimeToFirstByte > 0 {
			o.line += fmt.Sprintf(" (first byte at %s)", ms(s.TimeToFirstByte))
		}
		o.line += "; " + endText[s.EndReason]
	}
	return o
}

// errEmptyReply is a reply of no bytes, with --fail-empty.
var errEmptyReply = exitError{exitEmpty, "the target sent an empty reply (--fail-empty)"}

func (ff *fetchFlags) register(a *app, cmd *cobra.Command) {
	ff.targetFlags.register(cmd)
	ff.handshake.register(a, cmd)
	ff.dialogue.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&ff.data, "data", "d", "", "send these bytes as they are instead of an HTTP GET")
	f.StringVar(&ff.dataFile, "data-file", "", `send the contents of this file ("-": stdin) instead of an HTTP GET`)
	f.BoolVar(&ff.lines, "lines", false, "have the server send the reply line by line (TCP; with -o json, one data object per line)")
	f.Uint64Var(&ff.maxBytes, "max-bytes", 0, "stop after this many bytes of reply (default: the server's cap, 64 MiB for probed's default)")
	f.DurationVar(&ff.readTimeout, "read-timeout", 0, "end when the reply stops for this long: a RECEIVE timeout for TCP, a clean end for UDP (default: only --timeout)")
	f.BoolVarP(&ff.reverse, "reverse", "r", false, "look the peer address up by address (PTR) once connected")
	f.BoolVarP(&ff.quiet, "quiet", "q", false, "print only the reply and errors, no event lines")
	f.BoolVar(&ff.keepWriteOpen, "keep-write-open", false, "do not half-close after the request: for targets that hang up when the client does")
	f.BoolVar(&ff.failEmpty, "fail-empty", false, "fail (exit 52, as curl) when the target closes without sending a byte")
	f.BoolVarP(&ff.noStdin, "no-stdin", "n", false, "read nothing from stdin, as ssh -n: without PATH, --data, --data-file or a dialogue, send nothing")
	f.BoolVar(&ff.trace, "trace", false, "when the fetch fails, trace the path to the address it failed at and say where it stopped (as probe trace, with its defaults: up to 30 hops and 10s more after --timeout)")
	ff.repeat.register(cmd)
	cmd.MarkFlagsMutuallyExclusive("data", "data-file")
}

// options builds the request from the flags, the optional PATH and, when
// neither gives one, stdin.
func (ff *fetchFlags) options(a *app, host string, rest []string) (client.FetchOptions, error) {
	opts := client.FetchOptions{
		Timeout:       a.Timeout,
		ReadTimeout:   ff.readTimeout,
		MaxBytes:      ff.maxBytes,
		ReverseLookup: ff.reverse,
		KeepWriteOpen: ff.keepWriteOpen,
	}
	if ff.trace {
		// The service's defaults; callContext waits for them too.
		opts.Trace = &client.TraceOptions{}
	}
	if ff.lines {
		opts.Framing = client.FramingLines
	}
	tlsOpts, err := ff.handshake.options()
	if err != nil {
		return opts, err
	}
	opts.TLS = tlsOpts
	if opts.Source, err = ff.handshake.sourceAddr(); err != nil {
		return opts, err
	}
	if opts.Steps, err = ff.dialogue.steps(); err != nil {
		return opts, err
	}
	hasData := ff.data != "" || ff.dataFile != ""
	if ff.noStdin && ff.dataFile == "-" {
		return opts, usagef("--data-file - reads the request from stdin, and -n says to read nothing from it: give one or the other")
	}
	if len(opts.Steps) > 0 {
		if hasData || len(rest) == 1 {
			return opts, usagef("--send, --expect and --starttls are the request: give them, or a PATH, --data or --data-file")
		}
		if ff.dialogue.starttls == "" && opts.TLS != nil {
			return opts, usagef("with --send and --expect, TLS starts with --starttls; the TLS flags are its options")
		}
		return opts, nil
	}
	switch {
	case len(rest) == 1 && hasData:
		return opts, usagef("PATH asks for an HTTP GET; --data and --data-file send raw bytes instead: give one or the other")
	case len(rest) == 1:
		// The Host header names the site, as curl sends it: the TLS server
		// name, or else HOST when it is a name.
		hostHeader := ff.handshake.sni
		if _, err := netip.ParseAddr(host); hostHeader == "" && err != nil {
			hostHeader = host
		}
		opts.HTTPGet = &client.HTTPGet{Path: rest[0], Host: hostHeader}
	case ff.data != "":
		opts.Payload = []byte(ff.data)
	// Stdin is the request when asked for, or else when nothing else is
	// and it is neither refused (-n) nor a terminal.
	case ff.dataFile == "-" || (ff.dataFile == "" && !ff.noStdin && !isTerminal(a.in)):
		b, err := io.ReadAll(io.LimitReader(a.in, int64(a.MaxPayload)+1))
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
	if len(opts.Payload) > a.MaxPayload {
		return opts, usagef("the request is over the probe server's cap of %s (--max-payload-bytes, as probed's)", plural(a.MaxPayload, "byte"))
	}
	if len(opts.Payload) == 0 {
		opts.Payload = nil
	}
	return opts, nil
}

// copyReply copies the reply to stdout as it arrives, or writes each
// message as JSON, and reports how it ended.
func (a *app) copyReply(host string, f *client.Fetch, ff fetchFlags) error {
	if a.Output == "json" {
		if err := writeJSON(a.out, connectEvent(f.Connect)); err != nil {
			return err
		}
	} else if !ff.quiet {
		printConnect(a.err, host, f.Connect, a.Verbose)
	}
	data := &netprobev1.FetchData{}
	msg := &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: data}}
	// last is the last byte of the reply written, to end the line before
	// an event line that would run onto it on a terminal.
	var last byte = '\n'
	for {
		b, err := f.Next()
		if err != nil {
			if a.Output != "json" && !ff.quiet && last != '\n' && isTerminal(a.out) && isTerminal(a.err) {
				fmt.Fprintln(a.err)
			}
			if errors.Is(err, io.EOF) {
				if err := a.fetchEnded(f.Summary(), ff.quiet); err != nil {
					return err
				}
				if s := f.Summary(); ff.failEmpty && s.BytesReceived == 0 && s.EndReason == client.EndEOF {
					return errEmptyReply
				}
				return nil
			}
			// The failure is what the exit code reports, even if stdout
			// failed too.
			_ = a.fetchEnded(f.Summary(), ff.quiet)
			return withPath(err)
		}
		if a.Output == "json" {
			data.Data = b
			err = writeJSON(a.out, msg)
		} else {
			_, err = a.out.Write(b)
			if len(b) > 0 {
				last = b[len(b)-1]
			}
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
	case a.Output == "json":
		return writeJSON(a.out, &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Summary{Summary: s.Proto()}})
	case !quiet:
		printTLS(a.err, s.TLS, a.Verbose)
		printSummary(a.err, s)
		if s.Path != nil {
			printHops(a.err, s.Path)
		}
	}
	return nil
}

// fetchFailed reports a fetch that failed before any data: the connect
// report and, for JSON, the summary.
func (a *app) fetchFailed(host string, pe *client.ProbeError, quiet bool) {
	switch {
	case pe.Connect == nil:
	case a.Output == "json":
		// The probe's failure is what the exit code reports.
		_ = writeJSON(a.out, connectEvent(pe.Connect))
		_ = a.fetchEnded(pe.Summary, quiet)
	case !quiet:
		printConnect(a.err, host, pe.Connect, a.Verbose)
		if pe.Path != nil {
			printHops(a.err, pe.Path)
		}
	}
}

func connectEvent(r *client.ConnectResult) *netprobev1.FetchResponse {
	return &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Connect{Connect: r.Proto()}}
}
