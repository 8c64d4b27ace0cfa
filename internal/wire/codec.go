// Package wire is how netprobe's gRPC messages go on and off the wire: a
// proto codec whose buffers come from Pool, transport buffers sized for a
// Fetch's bulk data, a way for a server to send that data without copying
// it into the message, and one for a client to receive it without copying
// it twice.
package wire

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// transportBuffer is the size of the server's write buffer and the
// client's read buffer. gRPC's 32 KiB default cuts a Fetch's 256 KiB chunk
// into eight writes and as many reads and wake-ups; 1 MiB moves a chunk in
// one (bench: Fetch 0.46-0.54 of the relay -> 0.53-0.61).
const transportBuffer = 1 << 20

// window is the HTTP/2 flow-control window of every stream and connection,
// both ways: the most that may be sent and not yet read. It is the largest
// window gRPC's bandwidth-delay estimation would grow to, set from the
// start, which turns the estimation and its pings off (bench, seven runs
// of Fetch taking turns with and without: 0.58-0.66 of the relay against
// 0.51-0.58).
const window = 16 << 20

// requestWindow is the flow-control window of each stream towards a
// server: the most of a request a client may send before the server reads
// it, and so the most a stream the server has not admitted yet can make it
// hold. It is gRPC's minimum, which also keeps the estimation off:
// requests are small, and a Fetch's bulk data flows the other way.
const requestWindow = 64 << 10

// ServerOptions make a gRPC server use the codec, Pool, the flow-control
// windows (requestWindow for each stream, window for the connection), and
// a write buffer of transportBuffer that is shared (gRPC's default now): a
// connection holds one only while it writes, not for as long as it is
// open.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(ServerCodec{}),
		experimental.BufferPool(Pool),
		grpc.WriteBufferSize(transportBuffer),
		grpc.InitialWindowSize(requestWindow),
		grpc.InitialConnWindowSize(window),
	}
}

// DialOptions make a gRPC client connection read into a buffer of
// transportBuffer, its frames into Pool, with the flow-control window.
// Calls pick the codec with CallOption.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		experimental.WithBufferPool(Pool),
		grpc.WithReadBufferSize(transportBuffer),
		grpc.WithInitialWindowSize(window),
		grpc.WithInitialConnWindowSize(window),
	}
}

// CallOption makes a call use the codec, whatever connection it is on.
func CallOption() grpc.CallOption { return grpc.ForceCodecV2(Codec{}) }

// Codec is gRPC's proto codec with its buffers from Pool. It also
// unmarshals into a *Chunk.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is "proto": the codec speaks the same wire format as gRPC's own.
func (Codec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	// An *OutChunk is a proto.Message too: ask for it first.
	if c, ok := v.(*OutChunk); ok {
		return c.marshal(), nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wire: cannot marshal %T, not a proto.Message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses what Size just measured: the message must not
	// change in between, and gRPC does not let it.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := Pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		Pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, Pool)}, nil
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	// A *Chunk is a proto.Message too: ask for it first.
	if c, ok := v.(*Chunk); ok {
		return c.unmarshal(data)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("wire: cannot unmarshal into %T, not a proto.Message", v)
	}
	// A message that came in one buffer is read where it lies.
	if len(data) == 1 {
		return proto.Unmarshal(data[0].ReadOnlyData(), m)
	}
	buf := data.MaterializeToBuffer(Pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// ServerCodec is Codec for a server: a request that does not unmarshal
// (not protobuf, a string that is not UTF-8) is not an error to gRPC,
// which would answer INTERNAL before the handler could say otherwise. The
// message is left empty, and DecodeError tells the server what was wrong,
// so that it can answer INVALID_ARGUMENT.
type ServerCodec struct{ Codec }

// decodeErrors holds the unmarshal error of each message ServerCodec
// failed to fill, until DecodeError takes it.
var decodeErrors sync.Map

// Unmarshal implements encoding.CodecV2. A request that would decode into
// more than MaxRequestElements elements is not decoded at all:
// ErrTooManyElements.
func (c ServerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.Codec.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		// A message that came in one buffer is read where it lies.
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(Pool)
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	_, err := countElements(b, m.ProtoReflect().Descriptor(), MaxRequestElements)
	if err == nil {
		err = proto.Unmarshal(b, m)
	}
	if err != nil {
		proto.Reset(m)
		decodeErrors.Store(v, err)
	}
	return nil
}

// DecodeError returns, once, why ServerCodec could not unmarshal into v;
// nil when it could. A server using ServerCodec must ask it of every
// message it receives.
func DecodeError(v any) error {
	if err, ok := decodeErrors.LoadAndDelete(v); ok {
		return err.(error)
	}
	return nil
}

// Field numbers of the one message shape a Chunk reads itself.
var (
	responseData = fieldNumber(&netprobev1.FetchResponse{}, "data")
	dataBytes    = fieldNumber(&netprobev1.FetchData{}, "data")
)

func fieldNumber(m proto.Message, name string) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		panic("wire: no field " + name + " in " + string(m.ProtoReflect().Descriptor().FullName()))
	}
	return f.Number()
}

// OutChunk is a FetchResponse of data to send (pass it to SendMsg) whose
// bytes are a pooled buffer's: Marshal writes the message's few bytes of
// framing and hands gRPC's transport the buffer itself, with a reference
// of its own that the transport frees once the bytes are written. The
// chunk is not copied into the message, as proto.Marshal would.
//
// It embeds the message, so that it is a proto.Message itself to whatever
// else sees it on its way (interceptors, stats handlers).
type OutChunk struct {
	*netprobev1.FetchResponse
	buf mem.Buffer
}

// NewOutChunk returns the data message of buf's bytes, which must not be
// empty. The caller keeps its own reference to buf, to free once SendMsg
// returns: the bytes must not change until the transport frees its
// reference, which the buffer's pool waits for.
func NewOutChunk(buf mem.Buffer) *OutChunk {
	data := &netprobev1.FetchData{Data: buf.ReadOnlyData()}
	return &OutChunk{FetchResponse: &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: data}}, buf: buf}
}

// marshal returns what proto.Marshal would of the message, its framing in
// one buffer and the data in buf, referenced for gRPC to free.
func (c *OutChunk) marshal() mem.BufferSlice {
	n := c.buf.Len()
	inner := protowire.SizeTag(dataBytes) + protowire.SizeBytes(n)
	// The framing is a new slice each time: the transport holds it until
	// it is written, with nothing to say when that is.
	head := make([]byte, 0, 2*(1+binaryVarintMax))
	head = protowire.AppendTag(head, responseData, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(inner))
	head = protowire.AppendTag(head, dataBytes, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(n))
	c.buf.Ref()
	return mem.BufferSlice{mem.SliceBuffer(head), c.buf}
}

// binaryVarintMax is the longest varint of a message's length, which
// gRPC keeps under 4 GiB.
const binaryVarintMax = 5

// Chunk receives a FetchResponse (pass it to RecvMsg). When the message
// is data, its bytes alias the buffer the message arrived in, instead of
// a copy of it that proto.Unmarshal would make: a Fetch's bulk data is
// copied once on its way to the caller, not twice. The bytes are valid
// until Release.
//
// It embeds the message, so that it is a proto.Message itself to whatever
// else sees it on its way (interceptors, stats handlers).
type Chunk struct {
	*netprobev1.FetchResponse
	buf mem.Buffer
}

// Release gives the buffer of the last message back to the pool; the
// message's data must not be used after.
func (c *Chunk) Release() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
}

func (c *Chunk) unmarshal(data mem.BufferSlice) error {
	c.Release()
	c.FetchResponse = &netprobev1.FetchResponse{}
	var buf mem.Buffer
	if len(data) == 1 {
		// gRPC frees data once Unmarshal returns: keep a reference.
		buf = data[0]
		buf.Ref()
	} else {
		buf = data.MaterializeToBuffer(Pool)
	}
	if d, ok := aliasData(buf.ReadOnlyData()); ok {
		c.Event = &netprobev1.FetchResponse_Data{Data: d}
		c.buf = buf
		return nil
	}
	// Any other message (the connect report, the summary, or data with
	// fields this version does not know) is unmarshalled as usual.
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), c.FetchResponse)
}

// aliasData parses a FetchResponse that is nothing but data, whose bytes
// then alias b. It reports false for anything else.
func aliasData(b []byte) (*netprobev1.FetchData, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != responseData || typ != protowire.BytesType {
		return nil, false
	}
	inner, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, false
	}
	d := &netprobev1.FetchData{}
	for len(inner) > 0 {
		num, typ, n := protowire.ConsumeTag(inner)
		if n < 0 || num != dataBytes || typ != protowire.BytesType {
			return nil, false
		}
		v, m := protowire.ConsumeBytes(inner[n:])
		if m < 0 {
			return nil, false
		}
		// As in proto, the last value of a repeated scalar field wins.
		d.Data = v
		inner = inner[n+m:]
	}
	return d, true
}
