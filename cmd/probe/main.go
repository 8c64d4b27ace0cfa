// Command probe is netprobe's command line: it asks a probe server to
// connect to a target, exchange bytes with it, or look a service up, and
// prints what happened. With no --server it runs the same service in its
// own process.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.Getenv)
	stop()
	os.Exit(code)
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
	output    string
	tls       bool
	caFile    string
	certFile  string
	keyFile   string
	token     string

	// ran is set once a command's own code starts: an error before that
	// came from the command line itself.
	ran bool
}

// envFlags are the flags with an environment twin, read when the flag is
// not given.
var envFlags = map[string]string{
	"server":     "NETPROBE_SERVER",
	"dns-server": "NETPROBE_DNS_SERVER",
	"timeout":    "NETPROBE_TIMEOUT",
	"output":     "NETPROBE_OUTPUT",
	"tls":        "NETPROBE_TLS",
	"ca-file":    "NETPROBE_CA_FILE",
	"cert-file":  "NETPROBE_CERT_FILE",
	"key-file":   "NETPROBE_KEY_FILE",
	"token":      "NETPROBE_TOKEN",
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
	pf.StringArrayVarP(&a.servers, "server", "s", nil, "probe server to ask, host:port or unix:PATH (env NETPROBE_SERVER, commas between several); none: run the service in this process. sweep takes several, and dns:///NAME:PORT for every address of NAME")
	pf.StringVar(&a.dnsServer, "dns-server", "", "send DNS queries to this host:port instead of /etc/resolv.conf's servers: the in-process service's, and sweep's for dns:/// server names (env NETPROBE_DNS_SERVER)")
	pf.DurationVar(&a.timeout, "timeout", 5*time.Second, "time the probe may take, all stages together (env NETPROBE_TIMEOUT)")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text (a line per event) or json (protojson, an object per line) (env NETPROBE_OUTPUT)")
	pf.BoolVar(&a.tls, "tls", false, "talk TLS to the --server (implied by --ca-file, --cert-file and --token) (env NETPROBE_TLS)")
	pf.StringVar(&a.caFile, "ca-file", "", "trust the --server's certificate if these CAs (PEM) signed it, instead of the system's (env NETPROBE_CA_FILE)")
	pf.StringVar(&a.certFile, "cert-file", "", "client certificate (PEM) for a --server that wants mutual TLS (env NETPROBE_CERT_FILE)")
	pf.StringVar(&a.keyFile, "key-file", "", "private key (PEM) of --cert-file (env NETPROBE_KEY_FILE)")
	pf.StringVar(&a.token, "token", "", "bearer token for the --server; sent only over TLS (env NETPROBE_TOKEN)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.connectCommand(), a.fetchCommand(), a.resolveCommand(), a.healthCommand(), a.sweepCommand())
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
	return nil
}

// command wraps a command's body: errors from here on are no longer the
// command line's.
func (a *app) command(body func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		if len(a.servers) > 1 {
			return usagef("%s asks one probe server; several --server are for sweep", cmd.Name())
		}
		c, closeClient, err := a.dial()
		if err != nil {
			return err
		}
		defer closeClient()
		// The probe's own timeout ends it; the call gets a margin on top
		// so that a server that stops answering is still noticed.
		ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout+10*time.Second)
		defer cancel()
		return body(ctx, c, args)
	}
}

// dial connects to the probe server, or starts one in this process.
func (a *app) dial() (*client.Client, func(), error) {
	if a.server == "" {
		return inProcess(a.dnsServer)
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
