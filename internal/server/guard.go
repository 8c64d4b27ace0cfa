package server

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/internal/wire"
	"github.com/netprobe/netprobe/service"
)

// smallRequestBytes caps the request of every method but Fetch and Sweep,
// whose payload and target list may be large.
const smallRequestBytes = 64 << 10

// guard admits calls. Authentication comes first, in the tap handle, as a
// stream opens. Then, before a call's request is read, the guard admits
// it: a probe within its caller's rate and the in-flight limits; a Sweep
// within the Sweeps its caller may run at once, for as long as it runs
// (its probes are admitted one by one as it runs them, see
// service.Limiter); a
// stream that stays open (health Watch, reflection) within the open
// streams its caller may have, for as long as it runs; a health check
// within the reads its caller may have in progress. So gRPC reads a
// request only for a call that may run, and a caller can make probed hold
// no more requests, whole or partial, than its limits allow. The guard also turns a request that does not decode into
// INVALID_ARGUMENT, logs the calls that have no audit line of their own,
// and turns a panic in a handler into INTERNAL.
//
// For unary calls gRPC reads the request before any interceptor runs, so
// their admission wraps the method handlers themselves (wrap); a streaming
// handler reads its request itself, after the interceptors, so streams are
// admitted in the interceptor.
//
// It is one interceptor, not a chain of go-grpc-middleware's behind
// selectors, because every layer is a frame on the handler's goroutine,
// and a probe keeps that stack for as long as it waits on the network.
// The chain took a held Connect's stack just past 8 KiB, so the runtime
// doubled each one to 16 KiB: 160 MiB for 10,000 held probes (go run
// ./bench -only inflight).
type guard struct {
	logUnary  grpc.UnaryServerInterceptor
	logStream grpc.StreamServerInterceptor
	admission *admission.Admission
	logger    *slog.Logger
}

// audited reports whether method has an audit line per probe (Connect and
// Fetch), which makes the call's own log line redundant when it succeeds.
func audited(method string) bool {
	return method == netprobev1.ProbeService_Connect_FullMethodName || method == netprobev1.ProbeService_Fetch_FullMethodName
}

// isProbe reports whether method is the probe service's, whose calls
// count against the rate and in-flight limits (ResolveService too, which
// is cheap, but not free).
func isProbe(method string) bool {
	return strings.HasPrefix(method, probePrefix)
}

var probePrefix = "/" + netprobev1.ProbeService_ServiceDesc.ServiceName + "/"

// wrap returns desc with each unary method admitted before its request is
// read (see guard).
func (g *guard) wrap(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		d.Methods[i].Handler = g.admitBeforeRead("/"+d.ServiceName+"/"+d.Methods[i].MethodName, d.Methods[i].Handler)
	}
	return &d
}

func (g *guard) admitBeforeRead(method string, handler grpc.MethodHandler) grpc.MethodHandler {
	info := &grpc.UnaryServerInfo{FullMethod: method}
	probe := isProbe(method)
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		service.Mark(ctx, service.MarkCall)
		release, err := g.admit(ctx, probe)
		if err == nil {
			service.Mark(ctx, service.MarkAdmitted)
			var decErr error
			held := true
			read := func(m any) error {
				decErr = decode(dec, m, smallRequestBytes)
				if !probe {
					// A call that is not a probe holds its place only
					// while its request is read.
					release()
					held = false
				}
				return decErr
			}
			resp, herr := handler(srv, ctx, read, interceptor)
			service.Mark(ctx, service.MarkReplied)
			if held {
				release()
			}
			if decErr == nil {
				return resp, herr
			}
			err = decErr
		}
		// The call never reached the interceptors: its refusal passes
		// through them, to be counted and logged like any other call's.
		return interceptor(ctx, nil, info, func(context.Context, any) (any, error) { return nil, err })
	}
}

// admit takes a call's place within the limits before its request is
// read: a probe's within the rate and in-flight limits, for the whole
// call; any other unary call's among the reads its caller may have in
// progress.
func (g *guard) admit(ctx context.Context, probe bool) (release func(), err error) {
	if probe {
		return g.admission.Admit(ctx, admission.Probe)
	}
	return g.refusing(ctx, admission.Read)
}

// refusing admits a call that is not a probe, charging its connection for
// a refusal: a client opening stream after stream only to have them
// refused is on its way to a GOAWAY.
func (g *guard) refusing(ctx context.Context, k admission.Kind) (release func(), err error) {
	release, err = g.admission.Admit(ctx, k)
	if err != nil {
		connguard.Refused(ctx)
	}
	return release, err
}

// decode reads a request with dec. A request that is not a valid message
// is the caller's error, INVALID_ARGUMENT (the server's codec reports it
// through wire.DecodeError, since gRPC would answer INTERNAL); one over
// limit bytes (none when limit is 0), or that would decode into more
// elements than the codec decodes, is RESOURCE_EXHAUSTED, as gRPC answers
// a message over its own cap.
func decode(dec func(any) error, m any, limit int) error {
	if err := dec(m); err != nil {
		return err
	}
	var over *wire.TooManyElementsError
	switch err := wire.DecodeError(m); {
	case errors.As(err, &over):
		return status.Errorf(codes.ResourceExhausted, "the request holds more elements than this server decodes (%d messages and entries of repeated fields, nested ones included): the cap is passed at %s", wire.MaxRequestElements, over.Field)
	case err != nil:
		return status.Errorf(codes.InvalidArgument, "the request is not a valid message: %v", err)
	}
	if pm, ok := m.(proto.Message); ok && limit > 0 {
		if n := proto.Size(pm); n > limit {
			return status.Errorf(codes.ResourceExhausted, "a request of %d bytes is over the %d bytes this method takes", n, limit)
		}
	}
	return nil
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	defer connguard.Hold(ctx)()
	if audited(info.FullMethod) {
		resp, err := g.recoverUnary(ctx, req, handler)
		if err != nil {
			g.logFailed(ctx, info.FullMethod, err)
		}
		return resp, err
	}
	return g.logUnary(ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return g.recoverUnary(ctx, req, handler)
	})
}

func (g *guard) recoverUnary(ctx context.Context, req any, handler grpc.UnaryHandler) (_ any, err error) {
	defer g.recover(ctx, &err)
	return handler(ctx, req)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	defer connguard.Hold(ss.Context())()
	if audited(info.FullMethod) {
		err := g.admitStream(srv, ss, info, handler)
		if err != nil {
			g.logFailed(ss.Context(), info.FullMethod, err)
		}
		return err
	}
	return g.logStream(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
		return g.admitStream(srv, ss, info, handler)
	})
}

func (g *guard) admitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	ctx := ss.Context()
	rs := &readStream{WrappedServerStream: middleware.WrapServerStream(ss)}
	var release func()
	switch {
	case info.FullMethod == netprobev1.ProbeService_Sweep_FullMethodName:
		release, err = g.refusing(ctx, admission.Sweep)
	case isProbe(info.FullMethod):
		release, err = g.admit(ctx, true)
	default:
		// A stream that is not a probe is small (health Watch,
		// reflection) but may stay open; so that an idle one holds no
		// place its caller needs for other calls, it holds a place among
		// its caller's open streams instead of reads, for as long as it
		// runs.
		rs.limit = smallRequestBytes
		release, err = g.refusing(ctx, admission.Watch)
	}
	if err != nil {
		return err
	}
	defer release()
	defer g.recover(ctx, &err)
	return handler(srv, rs)
}

// readStream decodes a stream's requests as decode does, up to limit
// bytes each (none when 0: gRPC's own cap, which Fetch and Sweep need).
type readStream struct {
	*middleware.WrappedServerStream
	limit int
}

func (s *readStream) RecvMsg(m any) error {
	return decode(s.ServerStream.RecvMsg, m, s.limit)
}

// logFailed logs a failed call of a method whose successful calls are
// audited instead, at the level the logging interceptor would use.
func (g *guard) logFailed(ctx context.Context, method string, err error) {
	st := status.Convert(err)
	service, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	g.logger.Log(ctx, slog.Level(logging.DefaultServerCodeToLevel(st.Code())), "finished call",
		"grpc.service", service, "grpc.method", name, "grpc.code", st.Code().String(), "grpc.error", loggedError(st.Message()), "caller", admission.CallerOf(ctx).String())
}

// recover, deferred, turns a panic into INTERNAL and logs its stack.
func (g *guard) recover(ctx context.Context, err *error) {
	if p := recover(); p != nil {
		g.logger.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}
