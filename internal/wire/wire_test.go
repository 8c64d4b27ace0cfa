package wire

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

func TestPool(t *testing.T) {
	p := newPool(256, 4<<10)
	for _, tc := range []struct{ n, wantCap int }{{0, 256}, {100, 256}, {256, 256}, {257, 4 << 10}, {4 << 10, 4 << 10}, {5 << 10, 5 << 10}} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.wantCap)
		}
		p.Put(b)
	}
	// A buffer given back is handed out again, at the length asked for.
	// sync.Pool may drop what it is given (the race detector makes it drop
	// a quarter on purpose), so give it a few chances.
	reused := false
	for range 20 {
		b := p.Get(300)
		p.Put(b)
		again := p.Get(1000)
		if len(*again) != 1000 {
			t.Fatalf("Get(1000) after a Put: len %d", len(*again))
		}
		if unsafe.SliceData(*again) == unsafe.SliceData(*b) {
			reused = true
			break
		}
	}
	if !reused {
		t.Error("a buffer given back was never handed out again")
	}
}

// split cuts b into a BufferSlice of pieces of at most n bytes, as the
// transport hands over a message that came in several frames.
func split(b []byte, n int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, mem.SliceBuffer(bytes.Clone(b[:k])))
		b = b[k:]
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), ChunkBytes/16)
	for _, tc := range []struct {
		name string
		msg  *netprobev1.FetchResponse
		// aliased: the data is read where it lies, not copied.
		aliased bool
	}{
		{"small data", &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{Data: []byte("hello")}}}, true},
		{"a whole chunk", &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{Data: big}}}, true},
		{"an empty datagram", &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{}}}, true},
		{"the connect report", &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Connect{Connect: &netprobev1.ConnectResponse{PeerAddress: "198.18.0.1:80", Port: 80}}}, false},
		{"the summary", &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Summary{Summary: &netprobev1.FetchSummary{BytesReceived: 5, TotalDuration: durationpb.New(3)}}}, false},
	} {
		for _, frame := range []int{1 << 30, 16 << 10, 7} {
			enc, err := Codec{}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			wire := enc.Materialize()
			enc.Free()
			var c Chunk
			if err := (Codec{}).Unmarshal(split(wire, frame), &c); err != nil {
				t.Fatalf("%s in frames of %d: %v", tc.name, frame, err)
			}
			if !proto.Equal(c.FetchResponse, tc.msg) {
				t.Errorf("%s in frames of %d: got %v, want %v", tc.name, frame, c.FetchResponse, tc.msg)
			}
			if got := c.buf != nil; got != tc.aliased {
				t.Errorf("%s in frames of %d: buffer kept %v, want %v", tc.name, frame, got, tc.aliased)
			}
			if d := c.FetchResponse.GetData().GetData(); tc.aliased && len(d) > 0 {
				held := c.buf.ReadOnlyData()
				start := uintptr(unsafe.Pointer(unsafe.SliceData(held)))
				at := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
				if at < start || at+uintptr(len(d)) > start+uintptr(len(held)) {
					t.Errorf("%s in frames of %d: the data is a copy, not the received buffer", tc.name, frame)
				}
			}
			c.Release()
			if c.buf != nil {
				t.Errorf("%s: Release kept the buffer", tc.name)
			}

			// A plain message decodes the same.
			var plain netprobev1.FetchResponse
			if err := (Codec{}).Unmarshal(split(wire, frame), &plain); err != nil || !proto.Equal(&plain, tc.msg) {
				t.Errorf("%s into a FetchResponse: %v, %v", tc.name, &plain, err)
			}
		}
	}
}

// TestChunkUnknownField checks that data with a field this version does not
// know is not taken for plain data: it is unmarshalled as usual, keeping
// the field.
func TestChunkUnknownField(t *testing.T) {
	inner := protowire.AppendTag(nil, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte("abc"))
	inner = protowire.AppendTag(inner, 9, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 7)
	msg := protowire.AppendTag(nil, 2, protowire.BytesType)
	msg = protowire.AppendBytes(msg, inner)
	var c Chunk
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(msg)}, &c); err != nil {
		t.Fatal(err)
	}
	if c.buf != nil || string(c.FetchResponse.GetData().GetData()) != "abc" || len(c.FetchResponse.GetData().ProtoReflect().GetUnknown()) == 0 {
		t.Errorf("got %v (buffer kept %v), want data abc with the unknown field kept, no buffer", c.FetchResponse, c.buf != nil)
	}
}

// FuzzChunk checks that a Chunk reads any input as proto.Unmarshal does.
func FuzzChunk(f *testing.F) {
	for _, m := range []*netprobev1.FetchResponse{
		{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{Data: []byte("hello")}}},
		{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{}}},
		{Event: &netprobev1.FetchResponse_Summary{Summary: &netprobev1.FetchSummary{BytesReceived: 5}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want netprobev1.FetchResponse
		wantErr := proto.Unmarshal(b, &want)
		var c Chunk
		err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(b))}, &c)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("error %v, proto.Unmarshal's %v", err, wantErr)
		}
		if err == nil && !proto.Equal(c.FetchResponse, &want) {
			t.Fatalf("got %v, proto.Unmarshal got %v", c.FetchResponse, &want)
		}
		c.Release()
	})
}

// TestChunkIsAMessage checks that a Chunk passes for the message it holds
// with code that expects a proto.Message, such as an interceptor.
func TestChunkIsAMessage(t *testing.T) {
	var m proto.Message = &Chunk{}
	if name := m.ProtoReflect().Descriptor().FullName(); name != "netprobe.v1.FetchResponse" {
		t.Errorf("an empty Chunk is a %s, want netprobe.v1.FetchResponse", name)
	}
	want := &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{Data: []byte("hello")}}}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	c := &Chunk{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, c); err != nil {
		t.Fatal(err)
	}
	if got, err := proto.Marshal(c); err != nil || !bytes.Equal(got, b) {
		t.Errorf("marshalling the Chunk: %x, %v; want %x", got, err, b)
	}
	c.Release()
}

// countingPool hands out fresh buffers and counts those given back.
type countingPool struct{ puts int }

func (p *countingPool) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (p *countingPool) Put(*[]byte) { p.puts++ }

// TestChunkKeepsItsBuffer checks that a Chunk whose data aliases a message
// that came in one buffer keeps that buffer from its pool until Release,
// though gRPC frees what it handed Unmarshal as soon as Unmarshal returns.
func TestChunkKeepsItsBuffer(t *testing.T) {
	msg, err := proto.Marshal(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: &netprobev1.FetchData{Data: bytes.Repeat([]byte("x"), 4096)}}})
	if err != nil {
		t.Fatal(err)
	}
	pool := &countingPool{}
	buf := pool.Get(len(msg))
	copy(*buf, msg)
	data := mem.BufferSlice{mem.NewBuffer(buf, pool)}
	var c Chunk
	if err := (Codec{}).Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	data.Free() // as gRPC does
	if pool.puts != 0 {
		t.Fatal("the buffer went back to its pool while the chunk's data aliases it")
	}
	if len(c.GetData().GetData()) != 4096 {
		t.Fatalf("data of %d bytes, want 4096", len(c.GetData().GetData()))
	}
	c.Release()
	if pool.puts != 1 {
		t.Errorf("after Release the buffer went back %d times, want once", pool.puts)
	}
}

// TestOutChunk checks that an OutChunk marshals as proto.Marshal does the
// message it embeds, at every length of a varint's edges, and that the
// data is the buffer itself, not a copy.
func TestOutChunk(t *testing.T) {
	for _, n := range []int{1, 127, 128, 16383, 16384, ChunkBytes, 2097151, 2097152} {
		b := bytes.Repeat([]byte{byte(n)}, n)
		buf := mem.SliceBuffer(b)
		c := NewOutChunk(buf)
		want, err := proto.Marshal(c.FetchResponse)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := Codec{}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := enc.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("%d bytes: marshalled %x..., want %x...", n, got[:min(len(got), 16)], want[:16])
		}
		if len(enc) != 2 || unsafe.SliceData(enc[1].ReadOnlyData()) != unsafe.SliceData(b) {
			t.Errorf("%d bytes: the data is not the buffer handed in", n)
		}
		// What marshals is what the receiving side reads.
		var got netprobev1.FetchResponse
		if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &got); err != nil || !bytes.Equal(got.GetData().GetData(), b) {
			t.Errorf("%d bytes: read back %d bytes, %v", n, len(got.GetData().GetData()), err)
		}
	}
}

// TestOutChunkHoldsItsBuffer checks that the buffer goes back to its pool
// once both its holder and gRPC's transport have freed it, and not before:
// a buffer reused while the transport still holds it would send another
// Fetch's bytes, perhaps another caller's, in its place.
func TestOutChunkHoldsItsBuffer(t *testing.T) {
	pool := &countingPool{}
	b := pool.Get(4096)
	buf := mem.NewBuffer(b, pool)
	enc, err := Codec{}.Marshal(NewOutChunk(buf))
	if err != nil {
		t.Fatal(err)
	}
	buf.Free() // the Fetch is done with it once SendMsg returns
	if pool.puts != 0 {
		t.Fatal("the buffer went back to its pool while the transport holds it")
	}
	enc.Free() // the transport, once it has written the bytes
	if pool.puts != 1 {
		t.Errorf("after the transport freed it the buffer went back %d times, want once", pool.puts)
	}
}

// TestOutChunkIsAMessage checks that an OutChunk passes for the message
// it holds with code that expects a proto.Message, such as an interceptor.
func TestOutChunkIsAMessage(t *testing.T) {
	var m proto.Message = NewOutChunk(mem.SliceBuffer("hello"))
	if name := m.ProtoReflect().Descriptor().FullName(); name != "netprobe.v1.FetchResponse" {
		t.Errorf("an OutChunk is a %s, want netprobe.v1.FetchResponse", name)
	}
	if got := m.(*OutChunk).GetData().GetData(); string(got) != "hello" {
		t.Errorf("its data %q, want hello", got)
	}
}
