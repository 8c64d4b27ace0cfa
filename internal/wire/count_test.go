package wire

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// decodedElements counts the elements (see MaxRequestElements) m holds,
// itself included, as decoding made them.
func decodedElements(m protoreflect.Message) int {
	n := 1
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				n += decodedElements(v.List().Get(i).Message())
			}
		case fd.IsList():
			n += v.List().Len()
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				n += 1 + decodedElements(v.Message())
				return true
			})
		case fd.IsMap():
			n += v.Map().Len()
		case fd.Message() != nil:
			n += decodedElements(v.Message())
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

// alpnBomb is a Fetch whose alpn holds n empty strings: two bytes each on
// the wire.
func alpnBomb(n int) *netprobev1.FetchRequest {
	return &netprobev1.FetchRequest{Target: &netprobev1.Target{Host: "192.0.2.1", Port: 443}, Tls: &netprobev1.TlsOptions{Alpn: make([]string, n)}}
}

// TestServerCodecElementCap decodes requests just within and just over
// MaxRequestElements, and the attacks that decoded 1 MB into 45 MB: a
// Sweep of 10,000 targets of 22 empty steps and an expect, and a Fetch
// whose alpn held 540,000 empty strings. Those over are refused before
// any of it is decoded, with the field that passed the cap.
func TestServerCodecElementCap(t *testing.T) {
	// A Sweep is one element, and a target two and its steps: this is
	// 1 + 16,383 * 4 + 2 + 1 = 65,536.
	atCap := sweep(MaxRequestElements/4-1, 2)
	atCap.Targets = append(atCap.Targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{}}, &netprobev1.SweepTarget{})
	over := &netprobev1.SweepRequest{Targets: append(atCap.Targets[:len(atCap.Targets):len(atCap.Targets)], &netprobev1.SweepTarget{})}
	// A Fetch, its target and its TLS options are three elements.
	alpnAtCap, alpnOver := alpnBomb(MaxRequestElements-3), alpnBomb(MaxRequestElements-2)
	for _, tc := range []struct {
		name string
		req  proto.Message
		// at is the field that passes the cap, "" when none does.
		at string
	}{
		{"at the cap", atCap, ""},
		{"one over", over, "netprobe.v1.SweepRequest.targets"},
		{"empty steps", sweep(10000, 23), "netprobe.v1.SweepTarget.steps"},
		{"alpn at the cap", alpnAtCap, ""},
		{"alpn one over", alpnOver, "netprobe.v1.TlsOptions.alpn"},
		{"alpn bomb", alpnBomb(540000), "netprobe.v1.TlsOptions.alpn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			got := tc.req.ProtoReflect().New().Interface()
			if err := (ServerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
				t.Fatal(err)
			}
			err = DecodeError(got)
			if tc.at != "" {
				var over *TooManyElementsError
				if !errors.Is(err, ErrTooManyElements) || !errors.As(err, &over) || string(over.Field) != tc.at || proto.Size(got) != 0 {
					t.Errorf("%d bytes: %v, %d bytes decoded; want ErrTooManyElements at %s, nothing decoded", len(b), err, proto.Size(got), tc.at)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.req) {
				t.Errorf("%d bytes: %v; want it decoded", len(b), err)
			}
		})
	}
}

// maxElementBytes is the most one element allocates as it is decoded
// (TestDecodedBytes): a request within MaxRequestElements decodes into at
// most its own bytes and this much for each element.
const maxElementBytes = 160

// TestDecodedBytes decodes requests of each kind of element, as many as
// MaxRequestElements allows, and measures what decoding allocated: at
// most maxElementBytes an element beyond the request's bytes. (Empty
// Sweep targets and TLS options are the dearest, some 140 bytes each;
// the empty strings of the alpn bomb some 85.)
func TestDecodedBytes(t *testing.T) {
	many := func(n int, f func(*netprobev1.SweepRequest)) *netprobev1.SweepRequest {
		r := &netprobev1.SweepRequest{}
		for range n {
			f(r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		req  *netprobev1.SweepRequest
	}{
		{"empty targets", many(MaxRequestElements-1, func(r *netprobev1.SweepRequest) { r.Targets = append(r.Targets, &netprobev1.SweepTarget{}) })},
		{"targets", many(MaxRequestElements/2-1, func(r *netprobev1.SweepRequest) {
			r.Targets = append(r.Targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{}})
		})},
		{"TLS options", many(MaxRequestElements/2-1, func(r *netprobev1.SweepRequest) {
			r.Targets = append(r.Targets, &netprobev1.SweepTarget{Tls: &netprobev1.TlsOptions{}})
		})},
		{"sends", &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Steps: sweep(1, MaxRequestElements-4).Targets[0].Steps}}}},
		{"empty strings", &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Tls: &netprobev1.TlsOptions{Alpn: make([]string, MaxRequestElements-3)}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			n, err := countElements(b, tc.req.ProtoReflect().Descriptor(), MaxRequestElements)
			if err != nil {
				t.Fatalf("%d elements: %v", n, err)
			}
			var got netprobev1.SweepRequest
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err = proto.Unmarshal(b, &got)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			alloc := int(after.TotalAlloc - before.TotalAlloc)
			t.Logf("%d bytes, %d elements: %d bytes allocated, %d an element", len(b), n, alloc, alloc/n)
			if alloc > len(b)+n*maxElementBytes {
				t.Errorf("%d bytes, %d elements decoded into %d bytes, over %d an element", len(b), n, alloc, maxElementBytes)
			}
		})
	}
}

// fuzzTypes are the messages FuzzCountElements decodes into, chosen by
// the input's first byte: the requests a server decodes, and one with
// packed numbers, maps' like nesting and repeated strings and bytes,
// which no request has yet.
var fuzzTypes = []proto.Message{
	&netprobev1.SweepRequest{},
	&netprobev1.FetchRequest{},
	&netprobev1.ConnectRequest{},
	&descriptorpb.FileDescriptorSet{},
}

// FuzzCountElements checks the count read off the wire against the
// elements proto.Unmarshal makes of the same bytes: never fewer.
func FuzzCountElements(f *testing.F) {
	seeds := []proto.Message{
		sweep(3, 2),
		&netprobev1.FetchRequest{Target: &netprobev1.Target{Host: "a"}, Steps: []*netprobev1.Step{{Action: &netprobev1.Step_Expect{Expect: "x"}}}, Tls: &netprobev1.TlsOptions{Alpn: []string{"h2"}}},
		&netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: strings.Repeat("a", 10)}, Tls: &netprobev1.TlsOptions{Alpn: []string{"", "", "h2"}}},
		&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{{
			Dependency: []string{"a", ""}, PublicDependency: []int32{1, 300, -1}, WeakDependency: []int32{0},
			SourceCodeInfo: &descriptorpb.SourceCodeInfo{Location: []*descriptorpb.SourceCodeInfo_Location{{Path: []int32{4, 0, 2, 70000}, Span: []int32{1, 2, 3}}}},
		}}},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(i)}, b...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		m := fuzzTypes[int(b[0])%len(fuzzTypes)].ProtoReflect().New().Interface()
		b = b[1:]
		if proto.Unmarshal(b, m) != nil {
			return
		}
		n, err := countElements(b, m.ProtoReflect().Descriptor(), MaxRequestElements)
		if err != nil {
			t.Fatalf("countElements: %v, where proto.Unmarshal took the bytes", err)
		}
		if want := decodedElements(m.ProtoReflect()); n < want {
			t.Fatalf("counted %d elements, decoding made %d", n, want)
		}
	})
}
