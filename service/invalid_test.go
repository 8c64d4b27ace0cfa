package service

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/wire"
)

// maxRefusalBytes bounds each half of an INVALID_ARGUMENT answer, its
// message and its BadRequest detail: maxViolations fields and
// maxViolationBytes of description each, with room for the fields'
// names.
const maxRefusalBytes = 6 << 10

// validate decodes b, a request of the kind of m, as the server does
// (wire.ServerCodec), and validates it as its method would; ok is false
// when b is not decoded, which the server refuses before validation with
// an answer of its own, the same whatever the bytes.
func validate(t *testing.T, s *Server, m proto.Message, b []byte) (err error, ok bool) {
	t.Helper()
	if err := (wire.ServerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m); err != nil {
		t.Fatal(err)
	}
	if wire.DecodeError(m) != nil {
		return nil, false
	}
	switch req := m.(type) {
	case *netprobev1.ConnectRequest:
		_, err = s.validateConnect(req)
	case *netprobev1.FetchRequest:
		_, err = s.validateFetch(req)
	case *netprobev1.SweepRequest:
		_, _, err = s.validateSweep(req)
	default:
		t.Fatalf("no validation of %T", m)
	}
	return err, true
}

// refusalSize checks that err, when not nil, is INVALID_ARGUMENT whose
// message and detail are each within maxRefusalBytes, and returns its
// violations.
func refusalSize(t *testing.T, err error) []*errdetails.BadRequest_FieldViolation {
	t.Helper()
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("refusal %v, want INVALID_ARGUMENT", err)
	}
	var fvs []*errdetails.BadRequest_FieldViolation
	detail := 0
	for _, d := range st.Proto().GetDetails() {
		detail += proto.Size(d)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			fvs = append(fvs, br.GetFieldViolations()...)
		}
	}
	if len(st.Message()) > maxRefusalBytes || detail > maxRefusalBytes || len(fvs) > maxViolations {
		t.Fatalf("refusal of %d bytes, detail of %d bytes with %d violations; want at most %d bytes each, %d violations", len(st.Message()), detail, len(fvs), maxRefusalBytes, maxViolations)
	}
	return fvs
}

// The requests of the attacks, scaled to within the codec's cap on
// elements (those beyond it are refused by the codec: see wire's
// TestServerCodecElementCap).
func manyALPN(n int) *netprobev1.TlsOptions { return &netprobev1.TlsOptions{Alpn: make([]string, n)} }

var tlsTarget = &netprobev1.Target{Host: "192.0.2.1", Port: 443}

// badSweep is a Sweep of n targets each wrong in several ways.
func badSweep(n int) *netprobev1.SweepRequest {
	req := &netprobev1.SweepRequest{}
	for range n {
		req.Targets = append(req.Targets, &netprobev1.SweepTarget{
			Target: &netprobev1.Target{Host: strings.Repeat("\x01", 300), Port: 70000, SourceAddress: strings.Repeat("\u202e", 100)},
			Tls:    &netprobev1.TlsOptions{ServerName: strings.Repeat("-", 1000), Alpn: []string{"", strings.Repeat("x", 300)}},
			Steps:  []*netprobev1.Step{{Action: &netprobev1.Step_Expect{Expect: "(" + strings.Repeat("\\pL", 300)}}},
		})
	}
	return req
}

// TestRefusalBounded plays requests that are wrong in many places, or in
// one place many times: each is refused naming the field at fault, in an
// answer of a few KiB (the alpn bomb's was 29 MB).
func TestRefusalBounded(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  proto.Message
		// field is a violation the refusal names, and says it of.
		field, says string
		// more is how many violations the message says it left out,
		// 0 for none.
		more bool
	}{
		{"Fetch, 60,000 empty ALPN names", &netprobev1.FetchRequest{Target: tlsTarget, Tls: manyALPN(60000)}, "tls.alpn", "60000 protocols is over the cap of 16", false},
		{"Connect, 30,000 empty ALPN names", &netprobev1.ConnectRequest{Target: tlsTarget, Tls: manyALPN(30000)}, "tls.alpn", "30000 protocols is over the cap of 16", false},
		{"Sweep, 60,000 empty ALPN names", &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: tlsTarget, Tls: manyALPN(60000)}}}, "targets[0].tls.alpn", "60000 protocols is over the cap of 16", false},
		{"Sweep, 8,000 targets of 4 empty ALPN names", &netprobev1.SweepRequest{Targets: func() (out []*netprobev1.SweepTarget) {
			for range 8000 {
				out = append(out, &netprobev1.SweepTarget{Target: tlsTarget, Tls: manyALPN(4)})
			}
			return out
		}()}, "targets[0].tls.alpn[0]", "an ALPN protocol is 1 to 255 bytes", true},
		{"17 ALPN names", &netprobev1.FetchRequest{Target: tlsTarget, Tls: &netprobev1.TlsOptions{Alpn: strings.Split(strings.Repeat("h2,", 17)[:3*17-1], ",")}}, "tls.alpn", "17 protocols is over the cap of 16", false},
		{"16 bad ALPN names", &netprobev1.FetchRequest{Target: tlsTarget, Tls: &netprobev1.TlsOptions{Alpn: make([]string, 16)}}, "tls.alpn[15]", "an ALPN protocol is 1 to 255 bytes", false},
		{"a server name of 1 MB", &netprobev1.FetchRequest{Target: tlsTarget, Tls: &netprobev1.TlsOptions{ServerName: strings.Repeat("\x00", 1<<20)}}, "tls.server_name", "\"\\x00\\x00", false},
		{"64 bad expects of 1 KiB", &netprobev1.FetchRequest{Target: tlsTarget, Steps: func() (out []*netprobev1.Step) {
			for range 64 {
				out = append(out, &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: "[" + strings.Repeat("a", 1023)}})
			}
			return out
		}()}, "steps[0].expect", "not an RE2 regular expression", true},
		{"Sweep of 3,000 targets wrong everywhere", badSweep(3000), "targets[0].target.host", "is not an IP address or a valid DNS name", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			err, ok := validate(t, s, tc.req.ProtoReflect().New().Interface(), b)
			if !ok {
				t.Fatalf("%d bytes not decoded", len(b))
			}
			fvs := refusalSize(t, err)
			found := false
			for _, fv := range fvs {
				found = found || fv.GetField() == tc.field && strings.Contains(fv.GetDescription(), tc.says)
			}
			msg := status.Convert(err).Message()
			if !found || !strings.Contains(msg, tc.field+": ") {
				t.Errorf("%d bytes: refusal %.300q, want %s: %q", len(b), msg, tc.field, tc.says)
			}
			if more := strings.HasSuffix(msg, " more"); more != tc.more {
				t.Errorf("%d bytes: refusal ends %q, want \"and N more\": %v", len(b), msg[max(0, len(msg)-40):], tc.more)
			}
			t.Logf("%d bytes: %d violations, message of %d bytes", len(b), len(fvs), len(msg))
		})
	}
}

// FuzzRefusal checks, for any request the server decodes, that what
// validation answers is within maxRefusalBytes: the first byte picks
// Connect, Fetch or Sweep, the rest is the request.
func FuzzRefusal(f *testing.F) {
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	kinds := []proto.Message{&netprobev1.ConnectRequest{}, &netprobev1.FetchRequest{}, &netprobev1.SweepRequest{}}
	for _, m := range []proto.Message{
		&netprobev1.ConnectRequest{Target: tlsTarget, Tls: manyALPN(300)},
		&netprobev1.FetchRequest{Target: tlsTarget, Tls: &netprobev1.TlsOptions{Alpn: []string{"h2", "", "http/1.1"}, ServerName: "\x00-"}},
		badSweep(30),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		for i, k := range kinds {
			if k.ProtoReflect().Descriptor() == m.ProtoReflect().Descriptor() {
				f.Add(append([]byte{byte(i)}, b...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		m := kinds[int(b[0])%len(kinds)].ProtoReflect().New().Interface()
		err, ok := validate(t, s, m, b[1:])
		if !ok {
			return
		}
		var st interface{ GRPCStatus() *status.Status }
		if err != nil && !errors.As(err, &st) {
			t.Fatalf("validation failed with %v, not a status", err)
		}
		refusalSize(t, err)
	})
}
