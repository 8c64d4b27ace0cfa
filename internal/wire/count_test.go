package wire

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// decodedMessages counts the messages m holds, itself included, as
// decoding made them.
func decodedMessages(m protoreflect.Message) int {
	n := 1
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				n += decodedMessages(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				n += 1 + decodedMessages(v.Message())
				return true
			})
		case fd.IsMap():
			n += v.Map().Len()
		case fd.Message() != nil:
			n += decodedMessages(v.Message())
		}
		return true
	})
	return n
}

// sweep is a Sweep of targets entries, each with steps steps.
func sweep(targets, steps int) *netprobev1.SweepRequest {
	req := &netprobev1.SweepRequest{}
	for range targets {
		st := &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "192.0.2.1", Port: 25}}
		for range steps {
			st.Steps = append(st.Steps, &netprobev1.Step{Action: &netprobev1.Step_Send{}})
		}
		req.Targets = append(req.Targets, st)
	}
	return req
}

// TestServerCodecMessageCap decodes requests just within and just over
// MaxRequestMessages, and the attack that decoded 1 MB into 45 MB (10,000
// targets of 22 empty steps and an expect): the one over is refused
// before any of it is decoded.
func TestServerCodecMessageCap(t *testing.T) {
	// A Sweep is one message, and a target two and its steps: this is
	// 1 + 8,191 * 4 + 2 + 1 = 32,768.
	atCap := sweep(MaxRequestMessages/4-1, 2)
	atCap.Targets = append(atCap.Targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{}}, &netprobev1.SweepTarget{})
	over := &netprobev1.SweepRequest{Targets: append(atCap.Targets[:len(atCap.Targets):len(atCap.Targets)], &netprobev1.SweepTarget{})}
	for _, tc := range []struct {
		name string
		req  *netprobev1.SweepRequest
		over bool
	}{
		{"at the cap", atCap, false},
		{"one over", over, true},
		{"the attack", sweep(10000, 23), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got netprobev1.SweepRequest
			if err := (ServerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
				t.Fatal(err)
			}
			err = DecodeError(&got)
			if tc.over {
				if !errors.Is(err, ErrTooManyMessages) || len(got.GetTargets()) != 0 {
					t.Errorf("%d bytes: %v, %d targets decoded; want ErrTooManyMessages, nothing decoded", len(b), err, len(got.GetTargets()))
				}
				return
			}
			if err != nil || !proto.Equal(&got, tc.req) {
				t.Errorf("%d bytes: %v; want it decoded", len(b), err)
			}
		})
	}
}

// FuzzCountMessages checks the count read off the wire against the
// messages proto.Unmarshal makes of the same bytes.
func FuzzCountMessages(f *testing.F) {
	for _, m := range []proto.Message{
		sweep(3, 2),
		&netprobev1.FetchRequest{Target: &netprobev1.Target{Host: "a"}, Steps: []*netprobev1.Step{{Action: &netprobev1.Step_Expect{Expect: "x"}}}, Tls: &netprobev1.TlsOptions{Alpn: []string{"h2"}}},
		&netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: strings.Repeat("a", 10)}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m netprobev1.SweepRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		n, err := countMessages(b, m.ProtoReflect().Descriptor(), MaxRequestMessages)
		if err != nil {
			t.Fatalf("countMessages: %v, where proto.Unmarshal took the bytes", err)
		}
		if want := decodedMessages(m.ProtoReflect()); n < want {
			t.Fatalf("counted %d messages, decoding made %d", n, want)
		}
	})
}
