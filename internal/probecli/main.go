// Package probecli is netprobe's command line, probe: it asks a probe
// server to connect to a target, exchange bytes with it, or look a service
// up, and prints what happened. With no --server it runs the same service
// in its own process.
package probecli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/service"
)

// Main runs the probe CLI with the process's arguments, standard streams
// and environment, and returns its exit code. cmd/probe is its command;
// probed runs it too when called as probe, so that one binary serves both
// in the container image.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.Getenv)
}

// streams are the CLI's standard input, output and error.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// app is one run of the CLI: its global flags and where it writes.
type app struct {
	streams
	getenv func(string) string

	// servers are the --server flags; server is the one a single-server
	// command asks ("" to run the service in this process).
	servers   []string
	server    string
	dnsServer string
	timeout   time.Duration
	// serverTimeout bounds reaching a --server and its health check.
	serverTimeout time.Duration
	verbose       bool
	maxPayload    int
	// targetCert and targetKey are the client certificate the in-process
	// service presents to targets (--cert, --key).
	targetCert, targetKey string
	output                string
	tls                   bool
	caFile                string
	certFile              string
	keyFile               string
	token                 string

	// ran is set once a command's own code starts: an error before that
	// came from the command line itself.
	ran bool
}

// envFlags are the flags with an environment twin, read when the flag is
// not given.
var envFlags = map[string]string{
	"server":         "NETPROBE_SERVER",
	"dns-server":     "NETPROBE_DNS_SERVER",
	"timeout":        "NETPROBE_TIMEOUT",
	"server-timeout": "NETPROBE_SERVER_TIMEOUT",
	"output":         "NETPROBE_OUTPUT",
	"tls":            "NETPROBE_TLS",
	"ca-file":        "NETPROBE_CA_FILE",
	"cert-file":      "NETPROBE_CERT_FILE",
	"key-file":       "NETPROBE_KEY_FILE",
	"token":          "NETPROBE_TOKEN",
}

const rootLong = `probe asks a netprobe server to open a connection somewhere, exchange a few
bytes, and report exactly what happened: the addresses on both ends, how long
each phase took and, when it fails, which stage failed and why.

With --server (or NETPROBE_SERVER) it asks that probe server; without one it
runs the same service inside this process, so it works with nothing else
running. Either way the probe is made from where the service runs.

Output is one short line per event, or with -o json one protojson object per
line (the service's own messages, stable for scripts). Failures go to stderr
as "probe: connect 127.0.0.1:9: connection refused (stage CONNECT, reason
REFUSED, errno ECONNREFUSED)", and the exit code says which kind.

`

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, std streams, getenv func(string) string) int {
	a := &app{streams: std, getenv: getenv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(std.in)
	root.SetOut(std.out)
	root.SetErr(std.err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if !a.ran {
		err = usageError{err}
	}
	code := exitCode(err)
	st, isStatus := status.FromError(err)
	refusal, refused := client.Refusal(err)
	switch {
	case !isStatus || isProbeError(err):
		fmt.Fprintf(std.err, "probe: %v\n", err)
	case refused:
		fmt.Fprintf(std.err, "probe: %v\n", refusal)
	case st.Code() == codes.InvalidArgument:
		// The server names the bad fields of what the user asked for.
		fmt.Fprintf(std.err, "probe: %s\n", st.Message())
	default:
		fmt.Fprintf(std.err, "probe: %s: %s: %s\n", a.serverName(), st.Code(), st.Message())
	}
	if code == exitUsage {
		fmt.Fprintf(std.err, "Run \"%s --help\" for usage.\n", cmd.CommandPath())
	}
	return code
}

func isProbeError(err error) bool {
	var pe *client.ProbeError
	return errors.As(err, &pe)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "probe",
		Short:         "Probe network targets through a netprobe server",
		Long:          rootLong + exitCodeHelp(),
		Version:       buildinfo.Version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		// With no subcommand, say so as a usage error.
		RunE: func(cmd *cobra.Command, _ []string) error {
			return errors.New("a command is required: connect, fetch, resolve, health or sweep")
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.readEnv(cmd.Flags())
		},
	}
	pf := root.PersistentFlags()
	pf.StringArrayVarP(&a.servers, "server", "s", nil, "probe server to ask, HOST[:PORT] (port 7070 when none) or unix:PATH (env NETPROBE_SERVER, commas between several); none: run the service in this process. sweep takes several, and dns:///NAME:PORT for every address of NAME")
	pf.StringVar(&a.dnsServer, "dns-server", "", "send DNS queries to this host:port instead of /etc/resolv.conf's servers: the in-process service's, and sweep's for dns:/// server names (env NETPROBE_DNS_SERVER)")
	durationFlag(pf, &a.timeout, "timeout", "", 5*time.Second, "time the probe may take, all stages together (env NETPROBE_TIMEOUT)")
	durationFlag(pf, &a.serverTimeout, "server-timeout", "", 3*time.Second, "time a --server gets to answer a health check before the probe is asked of it; a server that does not is exit 69 (env NETPROBE_SERVER_TIMEOUT)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "print every attempt, the phase timings and the whole certificate chain")
	pf.IntVar(&a.maxPayload, "max-payload-bytes", service.DefaultMaxPayloadBytes, "largest fetch request the probe server takes, as probed's flag of the same name (the in-process service's cap): a larger one is refused before it is sent")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text (a line per event) or json (protojson, an object per line) (env NETPROBE_OUTPUT)")
	pf.BoolVar(&a.tls, "tls", false, "talk TLS to the --server (implied by --ca-file, --cert-file and --token) (env NETPROBE_TLS)")
	pf.StringVar(&a.caFile, "ca-file", "", "trust the --server's certificate if these CAs (PEM) signed it, instead of the system's (env NETPROBE_CA_FILE)")
	pf.StringVar(&a.certFile, "cert-file", "", "client certificate (PEM) for a --server that wants mutual TLS (env NETPROBE_CERT_FILE)")
	pf.StringVar(&a.keyFile, "key-file", "", "private key (PEM) of --cert-file (env NETPROBE_KEY_FILE)")
	pf.StringVar(&a.token, "token", "", "bearer token for the --server; sent only over TLS (env NETPROBE_TOKEN)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.connectCommand(), a.fetchCommand(), a.resolveCommand(), a.healthCommand(), a.sweepCommand())
	// Cobra's completion command prints its help, and exits 0, for a shell
	// it has no script for: that is a usage error.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Args = cobra.NoArgs
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				return errors.New("want a shell: bash, zsh, fish or powershell")
			}
		}
	}
	return root
}

// readEnv fills flags not given on the command line from their
// environment twins, then checks the global flags.
func (a *app) readEnv(flags *pflag.FlagSet) error {
	for name, env := range envFlags {
		f := flags.Lookup(name)
		if f == nil || f.Changed {
			continue
		}
		v := a.getenv(env)
		if v == "" {
			continue
		}
		values := []string{v}
		if name == "server" {
			values = strings.Split(v, ",")
		}
		for _, v := range values {
			if err := flags.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	for i, s := range a.servers {
		a.servers[i] = withDefaultPort(s)
	}
	if len(a.servers) > 0 {
		a.server = a.servers[0]
	}
	if a.output != "text" && a.output != "json" {
		return fmt.Errorf("--output %q: want text or json", a.output)
	}
	if a.dnsServer != "" && len(a.servers) > 0 && !slices.ContainsFunc(a.servers, func(s string) bool { return strings.HasPrefix(s, "dns:///") }) {
		return errors.New("--dns-server applies to the in-process service and to dns:/// server names; the server given with --server resolves with its own")
	}
	if a.server == "" && (a.tls || a.caFile != "" || a.certFile != "" || a.keyFile != "" || a.token != "") {
		return errors.New("--tls, --ca-file, --cert-file, --key-file and --token are for a --server; the in-process service needs none")
	}
	if (a.certFile == "") != (a.keyFile == "") {
		return errors.New("--cert-file and --key-file go together")
	}
	if a.timeout <= 0 {
		return fmt.Errorf("--timeout %v: must be positive", a.timeout)
	}
	if a.serverTimeout <= 0 {
		return fmt.Errorf("--server-timeout %v: must be positive", a.serverTimeout)
	}
	return nil
}

// defaultServerPort is probed's default gRPC port.
const defaultServerPort = "7070"

// withDefaultPort gives a --server HOST probed's default port.
func withDefaultPort(server string) string {
	if strings.HasPrefix(server, "unix:") || strings.HasPrefix(server, "dns:///") {
		return server
	}
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(server, "["), "]"), defaultServerPort)
}

// command wraps a command's body: errors from here on are no longer the
// command line's. The probe server is reached (and a --server checked)
// first.
func (a *app) command(body func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		if len(a.servers) > 1 {
			return usagef("%s asks one probe server; several --server are for sweep", cmd.Name())
		}
		c, closeClient, err := a.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer closeClient()
		return body(cmd.Context(), c, args)
	}
}

// callContext bounds one call: the probe's own timeout ends the probe,
// and the call gets --server-timeout on top, so that a server that stops
// answering is noticed.
func (a *app) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout+a.serverTimeout)
}

// dial connects to the probe server, or starts one in this process. A
// --server must answer a health check within --server-timeout: a server
// that is down or hung is reported as such at once, not as a probe that
// timed out.
func (a *app) dial(ctx context.Context) (*client.Client, func(), error) {
	c, closeClient, err := a.dialUnchecked()
	if err != nil || a.server == "" {
		return c, closeClient, err
	}
	if err := a.checkServer(ctx, c); err != nil {
		closeClient()
		return nil, nil, err
	}
	return c, closeClient, nil
}

// dialUnchecked connects to the probe server, or starts one in this
// process.
func (a *app) dialUnchecked() (*client.Client, func(), error) {
	if a.server == "" {
		return a.inProcess()
	}
	opts, err := a.dialOptions()
	if err != nil {
		return nil, nil, usageError{err}
	}
	c, err := client.Dial(a.server, opts...)
	if err != nil {
		return nil, nil, usageError{err}
	}
	return c, func() { c.Close() }, nil
}

// checkServer asks c's health within --server-timeout.
func (a *app) checkServer(ctx context.Context, c *client.Client) error {
	hctx, cancel := context.WithTimeout(ctx, a.serverTimeout)
	defer cancel()
	st, err := c.Health(hctx)
	switch {
	case status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil:
		return status.Errorf(codes.Unavailable, "no answer within --server-timeout %v", a.serverTimeout)
	case err != nil:
		return err
	case st != healthpb.HealthCheckResponse_SERVING:
		return exitError{exitUnavailable, fmt.Sprintf("%s is %s", a.serverName(), st)}
	}
	return nil
}

// dialOptions turns the TLS and token flags into the client's options.
func (a *app) dialOptions() ([]client.DialOption, error) {
	if !a.tls && a.caFile == "" && a.certFile == "" && a.token == "" {
		return nil, nil
	}
	cfg := &tls.Config{}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file: no certificate in %s", a.caFile)
		}
	}
	if a.certFile != "" {
		cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	opts := []client.DialOption{client.WithTLS(cfg)}
	if a.token != "" {
		opts = append(opts, client.WithBearerToken(a.token))
	}
	return opts, nil
}

func (a *app) serverName() string {
	if a.server == "" {
		return "in-process probe server"
	}
	return "probe server " + a.server
}
