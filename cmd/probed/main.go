// Command probed serves netprobe.v1.ProbeService over gRPC, with the
// standard health service and server reflection.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/service"
)

// config is probed's command line; every flag has an environment twin.
type config struct {
	Listen          string        `default:"localhost:7070" env:"NETPROBE_LISTEN" help:"Address to serve gRPC on: host:port, or unix:PATH for a Unix socket. The default serves this machine only."`
	DefaultTimeout  time.Duration `default:"5s" env:"NETPROBE_DEFAULT_TIMEOUT" help:"Probe timeout when a request sets none."`
	MaxTimeout      time.Duration `default:"60s" env:"NETPROBE_MAX_TIMEOUT" help:"Largest probe timeout a request may ask for; more is INVALID_ARGUMENT."`
	DNSServer       string        `name:"dns-server" env:"NETPROBE_DNS_SERVER" placeholder:"HOST:PORT" help:"Send every DNS query to this server instead of the ones in /etc/resolv.conf (the hosts file is still read first)."`
	ServicesFile    string        `default:"/etc/services" env:"NETPROBE_SERVICES_FILE" type:"path" help:"Services database for service names; when it is missing or lacks a name, a built-in table answers."`
	MaxPayloadBytes int           `default:"1048576" env:"NETPROBE_MAX_PAYLOAD_BYTES" help:"Largest Fetch payload a request may carry, in bytes (default 1 MiB)."`
	MaxFetchBytes   uint64        `default:"67108864" env:"NETPROBE_MAX_FETCH_BYTES" help:"Most bytes one Fetch may receive, in bytes (default 64 MiB); also the default for requests that set no max_bytes."`
	ShutdownGrace   time.Duration `default:"10s" env:"NETPROBE_SHUTDOWN_GRACE" help:"On SIGINT or SIGTERM, how long in-flight calls get to finish before they are cut off."`
	LogLevel        string        `default:"info" enum:"debug,info,warn,error" env:"NETPROBE_LOG_LEVEL" help:"Log level: debug, info, warn or error."`
	LogFormat       string        `default:"text" enum:"text,json" env:"NETPROBE_LOG_FORMAT" help:"Log format: text or json (both on stderr)."`
}

const description = `probed answers network probes over gRPC: netprobe.v1.ProbeService (Connect, Fetch, ResolveService), grpc.health.v1.Health and server reflection, so "grpcurl -plaintext localhost:7070 list" works with no proto files at hand.

A probe that ran and failed is a result: the call returns OK and the response carries a ProbeError with the stage and reason. gRPC errors mean the call itself was refused (INVALID_ARGUMENT) or abandoned.`

func main() {
	var cfg config
	kong.Parse(&cfg, kong.Name("probed"), kong.Description(description), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cfg, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx is done, then drains; it returns the exit code.
func run(ctx context.Context, cfg config, stderr io.Writer) int {
	logger := newLogger(cfg, stderr)
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("probed failed", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	// The enum tag has already checked the value.
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	table, err := services.Load(cfg.ServicesFile)
	if err != nil {
		return err
	}
	srv, err := service.New(service.Config{
		DefaultTimeout:  cfg.DefaultTimeout,
		MaxTimeout:      cfg.MaxTimeout,
		MaxPayloadBytes: cfg.MaxPayloadBytes,
		MaxFetchBytes:   cfg.MaxFetchBytes,
		Resolver:        service.ResolverFor(cfg.DNSServer),
		Services:        table,
	})
	if err != nil {
		return err
	}
	lis, err := listen(cfg.Listen)
	if err != nil {
		return err
	}

	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoveryOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(interceptorLogger(logger), logOpts...),
			recovery.UnaryServerInterceptor(recoveryOpts...),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(interceptorLogger(logger), logOpts...),
			recovery.StreamServerInterceptor(recoveryOpts...),
		),
		// Room for the largest payload plus the rest of the request.
		grpc.MaxRecvMsgSize(cfg.MaxPayloadBytes+64<<10),
	)
	netprobev1.RegisterProbeServiceServer(gs, srv)
	hs := &drainingHealth{Server: health.NewServer()}
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	hs.SetServingStatus(netprobev1.ProbeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	logger.Info("serving", "addr", lis.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("draining", "grace", cfg.ShutdownGrace)
	// Health first, so load balancers stop sending before calls are refused.
	hs.drain()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		logger.Warn("grace period over: closing remaining calls")
		gs.Stop()
		<-stopped
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// listen opens the gRPC listener: "unix:PATH" for a Unix socket, else TCP.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		lis, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		return lis, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return lis, nil
}

// interceptorLogger adapts slog to go-grpc-middleware's logging interface.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
