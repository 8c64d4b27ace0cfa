package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/wire"
)

func newTestGuard(t *testing.T, logs *bytes.Buffer) (*guard, *metrics) {
	m := newMetrics(prometheus.NewRegistry())
	a, err := admission.New(admission.Config{MaxInFlight: 10, MaxInFlightPerCaller: 10, Rate: 1e9, Burst: 1e9,
		MaxReadsPerCaller: 1, MaxWatchesPerCaller: 1, MaxWatches: 2, MaxSweepsPerCaller: 1, MaxSweeps: 1, ExpectRate: admission.MinExpectRate},
		admission.Metrics{Refusals: m.limitRefusals, InFlight: m.inFlight})
	if err != nil {
		t.Fatal(err)
	}
	return &guard{
		logUnary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			logs.WriteString("logged\n")
			return h(ctx, req)
		},
		admission: a,
		logger:    slog.New(slog.NewTextHandler(logs, nil)),
	}, m
}

// TestGuardRecovers checks that a panicking handler becomes INTERNAL, is
// logged with its stack, and gives its in-flight place back.
func TestGuardRecovers(t *testing.T) {
	var logs bytes.Buffer
	g, m := newTestGuard(t, &logs)
	method := netprobev1.ProbeService_Connect_FullMethodName
	handler := g.admitBeforeRead(method, func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		if err := dec(&netprobev1.ConnectRequest{}); err != nil {
			return nil, err
		}
		return interceptor(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
			panic("boom")
		})
	})
	resp, err := handler(nil, context.Background(), func(any) error { return nil }, g.unary)
	if status.Code(err) != codes.Internal || resp != nil {
		t.Fatalf("got %v, %v; want nil, INTERNAL", resp, err)
	}
	if !strings.Contains(logs.String(), "panic in handler") || !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "TestGuardRecovers") {
		t.Errorf("log does not name the panic and its stack:\n%s", logs.String())
	}
	var inFlight dto.Metric
	if err := m.inFlight.Write(&inFlight); err != nil || inFlight.GetGauge().GetValue() != 0 {
		t.Errorf("%v still in flight after the panic (%v)", inFlight.GetGauge().GetValue(), err)
	}
}

// TestDecode checks what the guard makes of a request that gRPC could
// not read, or the server's codec could not decode.
func TestDecode(t *testing.T) {
	big := &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: strings.Repeat("a", 100)}}
	wireBig, err := proto.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	// A Target (field 1) whose host (field 1) is not UTF-8.
	target := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff")
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), target)
	unmarshal := func(b []byte) func(any) error {
		return func(m any) error { return wire.ServerCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m) }
	}
	fail := func(err error) func(any) error { return func(any) error { return err } }
	for _, tc := range []struct {
		name  string
		dec   func(any) error
		limit int
		want  codes.Code
	}{
		{"decoded", unmarshal(wireBig), 0, codes.OK},
		{"not protobuf", unmarshal([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}), 0, codes.InvalidArgument},
		{"a string that is not UTF-8", unmarshal(badUTF8), 0, codes.InvalidArgument},
		{"over gRPC's cap", fail(status.Error(codes.ResourceExhausted, "grpc: received message larger than max")), 0, codes.ResourceExhausted},
		{"cancelled while read", fail(status.Error(codes.Canceled, "context canceled")), 0, codes.Canceled},
		{"over the method's cap", unmarshal(wireBig), 64, codes.ResourceExhausted},
		// A Target (field 1) given 70,000 times, empty: 140 KB that decode
		// into 70,000 messages (merged, but each made first).
		{"more messages than the codec decodes", unmarshal(bytes.Repeat([]byte{1<<3 | 2, 0}, 70000)), 0, codes.ResourceExhausted},
		// TLS options (field 4) whose alpn (field 2) holds 70,000 empty
		// strings: 140 KB that decode into 70,000 strings.
		{"more strings than the codec decodes", unmarshal(append([]byte{4<<3 | 2, 0xe0, 0xc5, 0x08}, bytes.Repeat([]byte{2<<3 | 2, 0}, 70000)...)), 0, codes.ResourceExhausted},
		{"within the method's cap", unmarshal(wireBig), 200, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &netprobev1.ConnectRequest{}
			err := decode(tc.dec, m, tc.limit)
			if got := status.Code(err); got != tc.want {
				t.Errorf("decode = %v, want %v", err, tc.want)
			}
			if wire.DecodeError(m) != nil {
				t.Error("the codec's error was left behind")
			}
		})
	}
}
