package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

const (
	// expectWindow bounds what an expect keeps to match against: past it,
	// the oldest half is dropped. A match is line-oriented, so only a line
	// longer than that is missed.
	expectWindow = 64 << 10
	// quotedBytes is how much of what the peer sent a NO_MATCH quotes.
	quotedBytes = 64
)

// dialogue runs the request's steps. It reports whether the last step was
// an expect that matched, which ends the fetch; a failed step sets the
// summary's error. It returns an error only when the caller's stream
// failed.
func (f *fetch) dialogue() (matched bool, err error) {
	for i, st := range f.steps {
		switch {
		case st.send != nil || st.template != "":
			b := st.send
			if st.template != "" {
				b = f.expand(st.template)
			}
			n, werr := f.conn.Write(b)
			f.sum.BytesSent += uint64(n)
			if werr != nil {
				f.failStep(i, netprobev1.Stage_STAGE_SEND, werr)
				return false, nil
			}
		case st.expect != nil:
			ok, err := f.expect(i, st)
			if err != nil || !ok {
				return false, err
			}
		case st.startTLS:
			tp := f.tls
			if tp == nil {
				tp = defaultTLS(f.target)
			}
			tc, res, pe := handshake(f.ctx, f.conn, tp, f.target, f.start)
			f.sum.Tls = res
			if pe != nil {
				pe.Step = proto.Uint32(uint32(i))
				f.sum.Error = pe
				return false, nil
			}
			// Bytes the peer sent ahead of the handshake are plaintext
			// that must not pass for part of the TLS stream.
			f.conn, f.pending, f.scanned = tc, nil, 0
		}
	}
	return f.steps[len(f.steps)-1].expect != nil, nil
}

// expect reads until step i's expression matches what came since the
// previous expect. The data read goes to the caller as any reply does.
func (f *fetch) expect(i int, st step) (bool, error) {
	re := st.expect
	r := newPooledReader(f.conn, rawBuffers)
	for {
		if src, loc, end := f.find(st, false); loc != nil {
			return true, f.matched(i, re, src, loc, end)
		}
		if f.sum.BytesReceived >= f.maxBytes {
			f.noMatch(i, re, "before the byte cap")
			return false, nil
		}
		if err := f.idleDeadline(); err != nil {
			f.failExpect(i, re, err)
			return false, nil
		}
		chunk, rerr := r.next()
		if len(chunk) > 0 {
			if len(f.pending)+len(chunk) > expectWindow {
				drop := max(0, len(f.pending)-expectWindow/2)
				f.pending = append(f.pending[:0:0], f.pending[drop:]...)
				f.scanned = max(0, f.scanned-drop)
			}
			// What the byte cap cuts off is not matched either.
			kept := chunk[:min(uint64(len(chunk)), f.maxBytes-f.sum.BytesReceived)]
			f.pending = append(f.pending, kept...)
			_, serr := f.deliver(chunk)
			r.release()
			if serr != nil {
				return false, serr
			}
		} else {
			r.release()
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if src, loc, end := f.find(st, true); loc != nil {
				return true, f.matched(i, re, src, loc, end)
			}
			f.noMatch(i, re, "before the peer closed")
			return false, nil
		default:
			f.failExpect(i, re, rerr)
			return false, nil
		}
	}
}

// find looks for st's match in what is pending: anywhere in it, or for an
// expect_line in one whole line at a time (and, when final, in a last
// line without its terminator). It returns where the match is, its
// indexes there, and how much of pending it uses up.
func (f *fetch) find(st step, final bool) (src []byte, loc []int, end int) {
	if !st.line {
		if loc = st.expect.FindSubmatchIndex(f.pending); loc == nil {
			return nil, nil, 0
		}
		return f.pending, loc, loc[1]
	}
	for f.scanned < len(f.pending) {
		rest := f.pending[f.scanned:]
		n := bytes.IndexByte(rest, '\n')
		next := f.scanned + n + 1
		if n < 0 {
			if !final {
				return nil, nil, 0
			}
			n, next = len(rest), len(f.pending)
		}
		line := bytes.TrimSuffix(rest[:n], []byte("\r"))
		f.scanned = next
		if loc = st.expect.FindSubmatchIndex(line); loc != nil {
			return line, loc, next
		}
	}
	return nil, nil, 0
}

// failExpect records an expect that failed with err (a timeout, a
// reset): classified as err is, with a message that quotes what had come
// without matching.
func (f *fetch) failExpect(i int, re *regexp.Regexp, err error) {
	f.failStep(i, netprobev1.Stage_STAGE_EXPECT, err)
	when := "before the timeout"
	if f.sum.Error.Reason != netprobev1.Reason_REASON_TIMEOUT {
		when = "before the connection failed (" + f.sum.Error.Message + ")"
	}
	f.sum.Error.Message = noMatchMessage(re, when, f.tail())
}

// matched records the match loc of re, step i's, in src, tells the
// caller, and keeps what follows end in what is pending for the next
// expect. It returns an error only when the caller's stream failed.
func (f *fetch) matched(i int, re *regexp.Regexp, src []byte, loc []int, end int) error {
	f.lastRe, f.groups = re, make([][]byte, len(loc)/2)
	for g := range f.groups {
		if loc[2*g] >= 0 {
			b := src[loc[2*g]:loc[2*g+1]]
			f.groups[g] = append([]byte(nil), b[:min(len(b), maxGroupBytes)]...)
		}
	}
	f.pending, f.scanned = f.pending[end:], 0
	if f.stream == nil {
		return nil
	}
	return f.stream.Send(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Match{
		Match: &netprobev1.ExpectMatch{Step: uint32(i), Groups: f.groups},
	}})
}

// expand is a send_template with the last match's groups in place of its
// references, as regexp.Expand makes it; with no match before, they are
// empty.
func (f *fetch) expand(template string) []byte {
	if f.lastRe == nil {
		return noGroups.Expand(nil, []byte(template), nil, []int{0, 0})
	}
	// Expand reads the groups through indexes into one source: lay them
	// end to end.
	var src []byte
	idx := make([]int, 0, 2*len(f.groups))
	for _, g := range f.groups {
		idx = append(idx, len(src), len(src)+len(g))
		src = append(src, g...)
	}
	return f.lastRe.Expand(nil, []byte(template), src, idx)
}

// noGroups expands a template before any match: every reference is empty.
var noGroups = regexp.MustCompile("")

// failStep records the failure of step i.
func (f *fetch) failStep(i int, stage netprobev1.Stage, err error) {
	f.fail(stage, err)
	f.sum.Error.Step = proto.Uint32(uint32(i))
}

// noMatch records an expect that the peer never satisfied, quoting the
// last of what it sent.
func (f *fetch) noMatch(i int, re *regexp.Regexp, when string) {
	f.sum.Error = &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_EXPECT,
		Reason:  netprobev1.Reason_REASON_NO_MATCH,
		Address: f.conn.RemoteAddr().String(),
		Message: noMatchMessage(re, when, f.tail()),
		Elapsed: durationpb.New(time.Since(f.start)),
		Step:    proto.Uint32(uint32(i)),
	}
}

// noMatchMessage says that re found no match before when, quoting tail,
// the last bytes received.
func noMatchMessage(re *regexp.Regexp, when string, tail []byte) string {
	return fmt.Sprintf("no match for %q %s; the last bytes received: %q", strings.TrimPrefix(re.String(), "(?m)"), when, tail)
}

// tail is the last of what came since the previous expect, as much as an
// error message quotes.
func (f *fetch) tail() []byte { return f.pending[max(0, len(f.pending)-quotedBytes):] }
