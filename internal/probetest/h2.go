package probetest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2 is a raw HTTP/2 client connection in prior-knowledge plaintext, for
// tests that attack a gRPC server the way no gRPC client would: streams
// left open or thrown away by the thousand, requests sent partly, header
// lists too large. It writes frames as told, ignoring flow control, and
// reads what the server answers on a goroutine of its own, acknowledging
// its SETTINGS and PINGs.
type H2 struct {
	conn net.Conn

	wmu  sync.Mutex
	bw   *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	next uint32

	mu sync.Mutex
	// statuses counts the grpc-status of the answers to streams, and
	// messages keeps the first grpc-message of each.
	statuses map[int]int
	messages map[int]string
	// resets counts the server's RST_STREAM frames, by code.
	resets map[http2.ErrCode]int
	// replied counts the bytes of DATA the server sent on each stream.
	replied map[uint32]int
	// goAway is the server's GOAWAY, once one came.
	goAway *GoAway
	// Flow control towards the server: the windows of the connection and
	// of each open stream, what a stream starts with, and the streams
	// the server has ended. flow is signalled when any of them changes.
	flow       *sync.Cond
	connWindow int64
	initWindow int64
	windows    map[uint32]int64
	ended      map[uint32]bool
	pings      map[[8]byte]chan struct{}
	pingSeq    uint64
	readDone   bool
	// GoAway is closed when the server sends a GOAWAY, and Closed when
	// the connection ends.
	GoAway, Closed chan struct{}
	// ReadErr is the error that ended reading, once Closed.
	ReadErr error
}

// DialH2 opens a raw HTTP/2 connection to addr and sends the client
// preface and an empty SETTINGS frame. The connection is closed when the
// test ends.
func DialH2(t testing.TB, addr string) *H2 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewH2(t, conn)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// NewH2 starts a raw HTTP/2 connection on conn, as DialH2 does. It fails
// if the server refuses the connection before the preface is sent.
func NewH2(t testing.TB, conn net.Conn) (*H2, error) {
	h := &H2{
		conn:       conn,
		bw:         bufio.NewWriterSize(conn, 64<<10),
		next:       1,
		statuses:   map[int]int{},
		messages:   map[int]string{},
		resets:     map[http2.ErrCode]int{},
		replied:    map[uint32]int{},
		connWindow: 65535,
		initWindow: 65535,
		windows:    map[uint32]int64{},
		ended:      map[uint32]bool{},
		pings:      map[[8]byte]chan struct{}{},
		GoAway:     make(chan struct{}),
		Closed:     make(chan struct{}),
	}
	h.flow = sync.NewCond(&h.mu)
	h.fr = http2.NewFramer(h.bw, conn)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hbuf)
	_, err := h.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = h.fr.WriteSettings()
	}
	if err == nil {
		err = h.bw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go h.read()
	t.Cleanup(func() {
		conn.Close()
		<-h.Closed
	})
	return h, nil
}

func (h *H2) read() {
	defer close(h.Closed)
	defer func() {
		h.mu.Lock()
		h.readDone = true
		h.flow.Broadcast()
		h.mu.Unlock()
	}()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.ReadErr = err
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				break
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				h.mu.Lock()
				for id := range h.windows {
					h.windows[id] += int64(v) - h.initWindow
				}
				h.initWindow = int64(v)
				h.flow.Broadcast()
				h.mu.Unlock()
			}
			h.write(func() error { return h.fr.WriteSettingsAck() })
		case *http2.PingFrame:
			if !f.IsAck() {
				h.write(func() error { return h.fr.WritePing(true, f.Data) })
				break
			}
			h.mu.Lock()
			if c, ok := h.pings[f.Data]; ok {
				close(c)
				delete(h.pings, f.Data)
			}
			h.mu.Unlock()
		case *http2.WindowUpdateFrame:
			h.mu.Lock()
			if f.StreamID == 0 {
				h.connWindow += int64(f.Increment)
			} else if _, ok := h.windows[f.StreamID]; ok {
				h.windows[f.StreamID] += int64(f.Increment)
			}
			h.flow.Broadcast()
			h.mu.Unlock()
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				h.mu.Lock()
				if code, err := strconv.Atoi(headerValue(f, "grpc-status")); err == nil {
					h.statuses[code]++
					if _, ok := h.messages[code]; !ok {
						h.messages[code] = headerValue(f, "grpc-message")
					}
				}
				h.endLocked(f.StreamID)
				h.mu.Unlock()
			}
		case *http2.DataFrame:
			h.mu.Lock()
			h.replied[f.StreamID] += len(f.Data())
			h.mu.Unlock()
		case *http2.RSTStreamFrame:
			h.mu.Lock()
			h.resets[f.ErrCode]++
			h.endLocked(f.StreamID)
			h.mu.Unlock()
		case *http2.GoAwayFrame:
			h.mu.Lock()
			if h.goAway == nil {
				h.goAway = &GoAway{Code: f.ErrCode, LastStreamID: f.LastStreamID, Debug: string(f.DebugData())}
				close(h.GoAway)
			}
			h.mu.Unlock()
		}
	}
}

func (h *H2) endLocked(id uint32) {
	h.ended[id] = true
	delete(h.windows, id)
	h.flow.Broadcast()
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

func (h *H2) write(f func() error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := f(); err != nil {
		return err
	}
	return h.bw.Flush()
}

// Request is one stream's request headers: a gRPC call of method, with
// extra header fields after the usual ones.
func Request(method string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method},
		{Name: ":authority", Value: "probed"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}, extra...)
}

// Open starts a stream with the header fields, in HEADERS and, past 16
// KiB, CONTINUATION frames, and returns its ID. endStream sends no
// request at all. Nothing is flushed until Flush.
func (h *H2) Open(fields []hpack.HeaderField, endStream bool) (uint32, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.hbuf.Reset()
	for _, f := range fields {
		if err := h.enc.WriteField(f); err != nil {
			return 0, err
		}
	}
	return h.openRawLocked(h.hbuf.Bytes(), endStream)
}

// OpenRaw starts a stream whose header block is block, already encoded.
func (h *H2) OpenRaw(block []byte, endStream bool) (uint32, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.openRawLocked(block, endStream)
}

func (h *H2) openRawLocked(block []byte, endStream bool) (uint32, error) {
	id := h.next
	h.next += 2
	h.mu.Lock()
	h.windows[id] = h.initWindow
	h.mu.Unlock()
	const frag = 16 << 10
	first := block[:min(len(block), frag)]
	rest := block[len(first):]
	err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0})
	for err == nil && len(rest) > 0 {
		n := min(len(rest), frag)
		err = h.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	return id, err
}

// Message is a gRPC length-prefixed message that claims length bytes and
// holds the first len(body) of them.
func Message(length uint32, body []byte) []byte {
	out := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(out[1:], length)
	copy(out[5:], body)
	return out
}

// Data sends data on stream id, in frames of 16 KiB, without waiting for
// flow control.
func (h *H2) Data(id uint32, data []byte, endStream bool) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	for {
		n := min(len(data), 16<<10)
		last := n == len(data)
		if err := h.fr.WriteData(id, endStream && last, data[:n]); err != nil {
			return err
		}
		data = data[n:]
		if last {
			return nil
		}
	}
}

// Send sends data on stream id as flow control allows, as a patient
// client would: it waits for the server to open the windows further. It
// returns how much it sent once all of it is, or once the server ends the
// stream or the connection.
func (h *H2) Send(id uint32, data []byte) (int, error) {
	sent := 0
	for len(data) > 0 {
		h.mu.Lock()
		for !h.readDone && !h.ended[id] && (h.windows[id] <= 0 || h.connWindow <= 0) {
			h.flow.Wait()
		}
		if h.readDone || h.ended[id] {
			h.mu.Unlock()
			return sent, nil
		}
		n := int(min(int64(len(data)), h.windows[id], h.connWindow, 16<<10))
		h.windows[id] -= int64(n)
		h.connWindow -= int64(n)
		h.mu.Unlock()
		if err := h.write(func() error { return h.fr.WriteData(id, false, data[:n]) }); err != nil {
			return sent, err
		}
		sent += n
		data = data[n:]
	}
	return sent, nil
}

// Ping sends a PING and waits for its answer: the server has then read
// every frame sent before it. It reports false if the connection ended
// first.
func (h *H2) Ping() bool {
	var data [8]byte
	h.mu.Lock()
	h.pingSeq++
	binary.BigEndian.PutUint64(data[:], h.pingSeq)
	ack := make(chan struct{})
	h.pings[data] = ack
	h.mu.Unlock()
	if err := h.write(func() error { return h.fr.WritePing(false, data) }); err != nil {
		return false
	}
	select {
	case <-ack:
		return true
	case <-h.Closed:
		return false
	}
}

// Replied reports whether the server has sent data on stream id: a
// response message, on a stream it has not ended.
func (h *H2) Replied(id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replied[id] > 0
}

// Ended reports whether the server has ended stream id.
func (h *H2) Ended(id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended[id]
}

// Reset sends RST_STREAM (CANCEL) on stream id.
func (h *H2) Reset(id uint32) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// Flush sends what was written.
func (h *H2) Flush() error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.bw.Flush()
}

// Close closes the connection and waits until reading has ended.
func (h *H2) Close() {
	h.conn.Close()
	<-h.Closed
}

// Statuses returns how many streams ended with each grpc-status.
func (h *H2) Statuses() map[int]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[int]int, len(h.statuses))
	for k, v := range h.statuses {
		out[k] = v
	}
	return out
}

// Messages returns the first grpc-message that came with each
// grpc-status.
func (h *H2) Messages() map[int]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[int]string, len(h.messages))
	for k, v := range h.messages {
		out[k] = v
	}
	return out
}

// Resets returns how many RST_STREAM frames the server sent, by code.
func (h *H2) Resets() map[http2.ErrCode]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[http2.ErrCode]int, len(h.resets))
	for k, v := range h.resets {
		out[k] = v
	}
	return out
}

// GoAway is what a GOAWAY frame said.
type GoAway struct {
	Code         http2.ErrCode
	LastStreamID uint32
	Debug        string
}

// GoAwayFrame returns the server's GOAWAY, or nil.
func (h *H2) GoAwayFrame() *GoAway {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.goAway
}
