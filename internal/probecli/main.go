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
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/settings"
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

// globals are the flags every command takes. Each is declared once, by
// its field's tags (see internal/settings).
type globals struct {
	// Servers are the --server flags.
	Servers   []string      `flag:"server" short:"s" env:"NETPROBE_SERVER" help:"probe server to ask, HOST[:PORT] (port 7070 when none) or unix:PATH (commas between several in the environment); none: run the service in this process. sweep takes several, and dns:///NAME:PORT for every address of NAME"`
	DNSServer string        `flag:"dns-server" env:"NETPROBE_DNS_SERVER" help:"send DNS queries to this host:port instead of /etc/resolv.conf's servers: the in-process service's, and sweep's for dns:/// server names"`
	Timeout   time.Duration `flag:"timeout" env:"NETPROBE_TIMEOUT" default:"5s" help:"time the probe may take, all stages together"`
	// ServerTimeout bounds reaching a --server and its health check.
	ServerTimeout time.Duration `flag:"server-timeout" env:"NETPROBE_SERVER_TIMEOUT" default:"3s" help:"time a --server gets to answer a health check before the probe is asked of it; a server that does not is exit 69"`
	Verbose       bool          `flag:"verbose" short:"v" help:"print every attempt, the phase timings and the whole certificate chain"`
	// MaxPayload is the in-process service's payload cap; its default is
	// the service's.
	MaxPayload int    `flag:"max-payload-bytes" help:"largest fetch request the probe server takes, as probed's flag of the same name (the in-process service's cap): a larger one is refused before it is sent"`
	Output     string `flag:"output" short:"o" env:"NETPROBE_OUTPUT" default:"text" help:"output format: text (a line per event) or json (protojson, an object per line)"`
	TLS        bool   `flag:"tls" env:"NETPROBE_TLS" help:"talk TLS to the --server (implied by --ca-file and --cert-file, and by --token but for a local --server)"`
	CAFile     string `flag:"ca-file" env:"NETPROBE_CA_FILE" help:"trust the --server's certificate if these CAs (PEM) signed it, instead of the system's"`
	CertFile   string `flag:"cert-file" env:"NETPROBE_CERT_FILE" help:"client certificate (PEM) for a --server that wants mutual TLS"`
	KeyFile    string `flag:"key-file" env:"NETPROBE_KEY_FILE" help:"private key (PEM) of --cert-file"`
	Token      string `flag:"token" env:"NETPROBE_TOKEN" help:"bearer token for the --server. It implies TLS, except to a --server on a loopback address (127.0.0.0/8, ::1, localhost) or unix:PATH, where probed serves plaintext by default: there it goes without TLS, unless --tls, --ca-file or --cert-file asks for it, and a connection that reaches anything but a local peer fails before the token is sent. Elsewhere a token needs TLS"`
}

// app is one run of the CLI: its global flags and where it writes.
type app struct {
	streams
	getenv func(string) string
	globals
	// settings are the global flags, for their environment twins.
	settings []settings.Setting

	// server is the one --server a single-server command asks ("" to run
	// the service in this process).
	server string
	// targetCert and targetKey are the client certificate the in-process
	// service presents to targets (--cert, --key).
	targetCert, targetKey string

	// ran is set once a command's own code starts: an error before that
	// came from the command line itself.
	ran bool
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

// flagHabits say, for the flags traceroute and ping users type that a
// command does not have, what it has instead.
var flagHabits = map[string]map[string]string{
	"trace": {
		"m": "the highest TTL is --max-hops",
		"q": "probes a hop are --probes",
		"w": "each probe waits 1s; the trace's budget is --timeout",
		"n": "names are looked up only with --names",
		"T": "probe trace sends TCP SYNs already",
		"U": "UDP is --udp",
		"I": "an ICMP echo is probe ping",
		"p": "the port is an argument: probe trace HOST PORT",
		"f": "the first TTL is always 1",
	},
	"ping": {
		"W": "the wait for each reply is --timeout",
		"w": "ping has no deadline: give --count",
		"M": "don't fragment is -D (--dont-fragment)",
		"I": "the source address is --source",
		"n": "probe ping looks no names up",
		"q": "-o json prints each echo as JSON, and the summary on stderr",
	},
}

// fieldFlags are the flags that set the request fields a server may
// refuse with its own limits (a --timeout over its --max-timeout): the
// user sees the field's name in the server's message.
var fieldFlags = map[string]string{
	"timeout":               "--timeout",
	"trace.timeout":         "--timeout (probe trace's; connect, fetch and sweep --trace take the server's default)",
	"read_timeout":          "--read-timeout",
	"max_bytes":             "--max-bytes",
	"payload":               "--data or --data-file",
	"target.source_address": "--source",
	"icmp.payload_bytes":    "--size",
}

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
	// What a server says is made printable: a terminal would obey its
	// escape codes.
	case refused:
		fmt.Fprintf(std.err, "probe: %s\n", client.Printable(fmt.Sprint(refusal)))
	case st.Code() == codes.InvalidArgument:
		// The server names the bad fields of what the user asked for,
		// and the CLI the flags that set them.
		fmt.Fprintf(std.err, "probe: %s\n", client.Printable(st.Message()))
		for _, d := range st.Details() {
			br, ok := d.(*errdetails.BadRequest)
			if !ok {
				continue
			}
			for _, v := range br.GetFieldViolations() {
				if flag, ok := fieldFlags[v.GetField()]; ok {
					fmt.Fprintf(std.err, "probe: %s is what %s sets\n", v.GetField(), flag)
				}
			}
		}
	default:
		fmt.Fprintf(std.err, "probe: %s: %s: %s\n", a.serverName(), st.Code(), client.Printable(st.Message()))
	}
	// A probe traced on failure says where its path stopped.
	var traced tracedError
	if errors.As(err, &traced) {
		fmt.Fprintf(std.err, "probe: %s\n", traced.where())
	}
	// Only a command line the CLI could not run sends the user to --help:
	// a request the server refused (INVALID_ARGUMENT among them) says why
	// itself.
	var usage usageError
	if errors.As(err, &usage) {
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
			return errors.New("a command is required: connect, trace, ping, fetch, resolve, health or sweep")
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.readEnv(cmd.Flags())
		},
	}
	pf := root.PersistentFlags()
	pf.SortFlags = false
	a.MaxPayload = service.DefaultLimits().MaxPayloadBytes
	var err error
	if a.settings, err = settings.Register(pf, &a.globals); err != nil {
		panic(err) // the tags of globals are wrong: every test fails
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		var unknown *pflag.NotExistError
		if errors.As(err, &unknown) {
			if habit, ok := flagHabits[cmd.Name()][unknown.GetSpecifiedName()]; ok {
				err = fmt.Errorf("%w: %s", err, habit)
			}
		}
		return usageError{err}
	})
	root.AddCommand(a.connectCommand(), a.traceCommand(), a.pingCommand(), a.fetchCommand(), a.resolveCommand(), a.healthCommand(), a.sweepCommand())
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
	if err := settings.Environ(flags, a.settings, a.getenv); err != nil {
		return err
	}
	for i, s := range a.Servers {
		if _, err := strconv.ParseUint(s, 10, 32); err == nil {
			// ping -s 100 means a size to a ping user.
			return fmt.Errorf("-s %s: -s is --server, a probe server's HOST[:PORT]; ping's payload size is --size", s)
		}
		a.Servers[i] = withDefaultPort(s)
	}
	if len(a.Servers) > 0 {
		a.server = a.Servers[0]
	}
	if a.Output != "text" && a.Output != "json" {
		return fmt.Errorf("--output %q: want text or json", a.Output)
	}
	if a.DNSServer != "" && len(a.Servers) > 0 && !slices.ContainsFunc(a.Servers, func(s string) bool { return strings.HasPrefix(s, "dns:///") }) {
		return errors.New("--dns-server applies to the in-process service and to dns:/// server names; the server given with --server resolves with its own")
	}
	if a.server == "" && (a.TLS || a.CAFile != "" || a.CertFile != "" || a.KeyFile != "" || a.Token != "") {
		return errors.New("--tls, --ca-file, --cert-file, --key-file and --token are for a --server; the in-process service needs none")
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return errors.New("--cert-file and --key-file go together")
	}
	if a.Timeout <= 0 {
		return fmt.Errorf("--timeout %v: must be positive", a.Timeout)
	}
	if a.ServerTimeout <= 0 {
		return fmt.Errorf("--server-timeout %v: must be positive", a.ServerTimeout)
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
		if len(a.Servers) > 1 {
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
	return context.WithTimeout(ctx, a.Timeout+a.ServerTimeout)
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
	opts, err := a.dialOptions(a.server)
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
	hctx, cancel := context.WithTimeout(ctx, a.ServerTimeout)
	defer cancel()
	st, err := c.Health(hctx)
	switch {
	case status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil:
		return status.Errorf(codes.Unavailable, "no answer within --server-timeout %v", a.ServerTimeout)
	case err != nil:
		return a.diagnose(ctx, err)
	case st != healthpb.HealthCheckResponse_SERVING:
		return exitError{exitUnavailable, fmt.Sprintf("%s is %s", a.serverName(), st)}
	}
	return nil
}

// dialOptions turns the TLS and token flags into the client's options
// for server.
func (a *app) dialOptions(server string) ([]client.DialOption, error) {
	askedTLS := a.TLS || a.CAFile != "" || a.CertFile != ""
	switch {
	case !askedTLS && a.Token == "":
		return nil, nil
	case !askedTLS && localServer(server):
		// probed serves plaintext on loopback and Unix sockets by
		// default, and takes tokens there: the token crosses no network,
		// which the client checks on each connection.
		return []client.DialOption{client.WithInsecureLocalTransport(), client.WithBearerToken(a.Token)}, nil
	}
	cfg, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	opts := []client.DialOption{client.WithTLS(cfg)}
	if a.Token != "" {
		opts = append(opts, client.WithBearerToken(a.Token))
	}
	return opts, nil
}

// tlsConfig is the TLS configuration the flags give for talking to a
// probe server: --ca-file's CAs, --cert-file's certificate.
func (a *app) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file: no certificate in %s", a.CAFile)
		}
	}
	if a.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// localServer says whether a --server is on this machine by its name: a
// Unix socket, a loopback address or localhost. The client's local
// transport checks where each connection really goes.
func localServer(server string) bool {
	if strings.HasPrefix(server, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return false
	}
	// An IPv4-mapped loopback address is not one to the local transport.
	addr, err := netip.ParseAddr(host)
	return host == "localhost" || err == nil && addr.IsLoopback() && !addr.Is4In6()
}

func (a *app) serverName() string {
	if a.server == "" {
		return "in-process probe server"
	}
	return "probe server " + a.server
}
