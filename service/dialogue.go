package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

const (
	// expectWindow bounds what an expect keeps to match against. An
	// expect is shown what came half a window at a time, each half ending
	// at a multiple of it in the bytes received (show), and on going into
	// a half drops what lies before the half before it: so it keeps 32 to
	// 64 KiB, and where a drop falls depends on the bytes' place, never
	// on how the peer's writes were split. A match is line-oriented: a
	// line of up to 32 KiB is always matched whole, one over 64 KiB never,
	// one between when it starts no earlier than the half before the one
	// it ends in. What is kept of a line whose start was dropped is no
	// line's start to an expect's ^, nor a line of its own to an
	// expect_line.
	expectWindow = 64 << 10
	// quotedBytes is how much of what the peer sent a NO_MATCH quotes;
	// quotedRefusalBytes how much of a refusal: a reply line, whole.
	quotedBytes        = 64
	quotedRefusalBytes = 128
)

// dialogue runs the request's steps. It reports whether the last step was
// an expect that matched, which ends the fetch; a failed step sets the
// summary's error. It returns an error only when the caller's stream
// failed.
func (f *fetch) dialogue() (matched bool, err error) {
	for i, st := range f.steps {
		switch {
		case st.send != nil || st.template != nil:
			b := st.send
			if st.template != nil {
				b = st.template.render(nil, f.groups)
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
			f.conn, f.pending, f.base, f.shown, f.scanned, f.searched, f.cut = tc, nil, 0, 0, 0, 0, false
		}
	}
	return f.steps[len(f.steps)-1].expect != nil, nil
}

// expect reads until step i's expression matches what came since the
// previous expect, or its refusal does first. The data read goes to the
// caller as any reply does.
//
// Each chunk is matched as it comes, once (see matcher): an expect costs
// time in proportion to what the peer sends, however it splits it, and
// that time is charged to the caller (the probe's budget), its refusal's
// with it.
func (f *fetch) expect(i int, st step) (bool, error) {
	p := st.expect
	if f.budget.ctx == nil {
		f.budget = budget{ctx: f.ctx, deadline: f.deadline, limiter: limiterOf(f.ctx)}
	}
	m := newMatcher(&f.budget, p)
	var rm *matcher
	if st.refusal != nil {
		rm = newMatcher(&f.budget, st.refusal)
	}
	r := newPooledReader(f.conn, rawChunkBytes)
	eof := false
	for {
		// The peer's close and the byte cap end the text once the expect
		// has been shown all that came before them.
		held := f.shown < len(f.pending)
		ended := (eof || f.sum.BytesReceived >= f.maxBytes) && !held
		src, loc, end, refused, err := f.find(m, rm, st, ended)
		switch {
		case err != nil:
			f.failExpect(i, p, err)
			return false, nil
		case refused:
			f.refused(i, p, src, loc, st.line)
			return false, nil
		case loc != nil:
			return true, f.matched(i, src, loc, end)
		case ended && eof:
			f.noMatch(i, p, "before the peer closed")
			return false, nil
		case ended:
			f.noMatch(i, p, "before the byte cap")
			return false, nil
		case held:
			f.show(m, rm)
			continue
		}
		if err := f.idleDeadline(); err != nil {
			f.failExpect(i, p, err)
			return false, nil
		}
		chunk, rerr := r.next()
		if len(chunk) > 0 {
			// What the byte cap cuts off is not matched either.
			kept := chunk[:min(uint64(len(chunk)), f.maxBytes-f.sum.BytesReceived)]
			f.pending = append(f.pending, kept...)
			_, serr := f.deliver(chunk, nil)
			r.release()
			if serr != nil {
				return false, serr
			}
			f.show(m, rm)
		} else {
			r.release()
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			eof = true
		default:
			f.failExpect(i, p, rerr)
			return false, nil
		}
	}
}

// show shows the expect, whose matchers are m and rm, the next of what
// is pending: up to the next multiple of half the window in the bytes
// received, first dropping what lies before the half before that one
// (see expectWindow).
func (f *fetch) show(m, rm *matcher) {
	const half = expectWindow / 2
	k := (f.base + f.shown) / half
	if drop := (k-1)*half - f.base; drop > 0 {
		// What is kept goes on from the last rune dropped. When that did
		// not end a line, the next line an expect_line would read began
		// before what is kept: it is cut.
		prev, _ := utf8.DecodeLastRune(f.pending[:drop])
		if f.scanned < drop && prev != '\n' {
			f.cut = true
		}
		f.pending, f.base, f.shown = f.pending[drop:], f.base+drop, f.shown-drop
		f.scanned = max(0, f.scanned-drop)
		f.searched = max(0, f.searched-drop)
		m.resetAfter(prev)
		if rm != nil {
			rm.resetAfter(prev)
		}
	}
	f.shown = min((k+1)*half-f.base, len(f.pending))
}

// find looks for st's match in what is pending: anywhere in it, going on
// from where m stopped, or for an expect_line in one whole line at a time
// (and, once the peer closed, in a last line without its terminator). It
// returns where the match is, its indexes there, and how much of pending
// it uses up; an error when the probe's time ran out while matching.
//
// rm, when st has a refusal, looks for it as m looks for the expect: a
// line the expect does not match is tried on it; in what is pending, it
// wins a match that starts before the expect's. Then refused is set, and
// the match is the refusal's.
func (f *fetch) find(m, rm *matcher, st step, ended bool) (src []byte, loc []int, end int, refused bool, err error) {
	text := f.pending[:f.shown]
	if !st.line {
		// Nothing more comes once the text ended: the last bytes are all
		// there is of it.
		if loc, err = m.scan(text, ended); err != nil {
			return nil, nil, 0, false, err
		}
		if rm != nil {
			rloc, err := rm.scan(text, ended)
			if err != nil {
				return nil, nil, 0, false, err
			}
			if rloc != nil && (loc == nil || rloc[0] < loc[0]) {
				return text, rloc, rloc[1], true, nil
			}
		}
		if loc == nil {
			return nil, nil, 0, false, nil
		}
		return text, loc, loc[1], false, nil
	}
	for f.scanned < len(text) {
		rest := text[f.scanned:]
		// A long line is searched for its end once, not on every chunk.
		n := bytes.IndexByte(text[f.searched:], '\n')
		if n < 0 {
			f.searched = len(text)
			if !ended {
				return nil, nil, 0, false, nil
			}
			n = len(rest)
		} else {
			n += f.searched - f.scanned
		}
		next := min(f.scanned+n+1, len(text))
		line := bytes.TrimSuffix(rest[:n], []byte("\r"))
		f.scanned, f.searched = next, next
		if f.cut {
			// The end of a line whose start was dropped.
			f.cut = false
			continue
		}
		m.reset()
		if loc, err = m.scan(line, true); loc != nil || err != nil {
			return line, loc, next, false, err
		}
		if rm != nil {
			rm.reset()
			if loc, err = rm.scan(line, true); loc != nil || err != nil {
				return line, loc, next, loc != nil, err
			}
		}
	}
	return nil, nil, 0, false, nil
}

// failExpect records an expect that failed with err (a timeout, a
// reset): classified as err is, with a message that quotes what had come
// without matching.
func (f *fetch) failExpect(i int, p *expectProg, err error) {
	f.failStep(i, netprobev1.Stage_STAGE_EXPECT, err)
	when := "before the timeout"
	if f.sum.Error.Reason != netprobev1.Reason_REASON_TIMEOUT {
		when = "before the connection failed (" + f.sum.Error.Message + ")"
	}
	f.sum.Error.Message = noMatchMessage(p, when, f.tail())
}

// matched records the match loc, step i's, in src, tells the caller, and
// keeps what follows end in what is pending for the next expect. It
// returns an error only when the caller's stream failed.
func (f *fetch) matched(i int, src []byte, loc []int, end int) error {
	f.groups = make([][]byte, len(loc)/2)
	for g := range f.groups {
		if loc[2*g] >= 0 {
			// Not nil, even when empty: the group took part.
			b := src[loc[2*g]:loc[2*g+1]]
			f.groups[g] = bytes.Clone(b[:min(len(b), maxGroupBytes)])
		}
	}
	f.pending, f.base, f.shown, f.scanned, f.searched, f.cut = f.pending[end:], f.base+end, f.shown-end, 0, 0, false
	return f.emit(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Match{
		Match: &netprobev1.ExpectMatch{Step: uint32(i), Groups: f.groups},
	}})
}

// refused records step i failed by its refusal, whose match is loc in
// src, quoting the reply: for an expect_line its line, for an expect what
// the refusal matched.
func (f *fetch) refused(i int, p *expectProg, src []byte, loc []int, line bool) {
	reply := src
	if !line {
		reply = src[loc[0]:loc[1]]
	}
	f.sum.Error = &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_EXPECT,
		Reason:  netprobev1.Reason_REASON_NO_MATCH,
		Address: f.conn.RemoteAddr().String(),
		Message: fmt.Sprintf("no match for %q: the target refused with %q", p.source, reply[:min(len(reply), quotedRefusalBytes)]),
		Elapsed: durationpb.New(time.Since(f.start)),
		Step:    proto.Uint32(uint32(i)),
	}
}

// failStep records the failure of step i.
func (f *fetch) failStep(i int, stage netprobev1.Stage, err error) {
	f.fail(stage, err)
	f.sum.Error.Step = proto.Uint32(uint32(i))
}

// noMatch records an expect that the peer never satisfied, quoting the
// last of what it sent.
func (f *fetch) noMatch(i int, p *expectProg, when string) {
	f.sum.Error = &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_EXPECT,
		Reason:  netprobev1.Reason_REASON_NO_MATCH,
		Address: f.conn.RemoteAddr().String(),
		Message: noMatchMessage(p, when, f.tail()),
		Elapsed: durationpb.New(time.Since(f.start)),
		Step:    proto.Uint32(uint32(i)),
	}
}

// noMatchMessage says that p found no match before when, quoting tail,
// the last bytes received.
func noMatchMessage(p *expectProg, when string, tail []byte) string {
	return fmt.Sprintf("no match for %q %s; the last bytes received: %q", p.source, when, tail)
}

// tail is the last of what came since the previous expect, as much as an
// error message quotes.
func (f *fetch) tail() []byte { return f.pending[max(0, len(f.pending)-quotedBytes):] }
