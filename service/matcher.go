package service

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp/syntax"
	"time"
	"unicode/utf8"
)

// matcher runs an expect's program over the bytes a peer sends, as they
// come. It is the Pike VM of Go's regexp package (regexp/exec.go), the
// same search with the same leftmost-first results, made incremental: the
// threads alive where the data received so far ends are kept, and the
// next chunk goes on from them, so matching costs time in proportion to
// the bytes received, where scanning everything received again on every
// chunk cost time in proportion to their square. After each chunk, it
// reports the match regexp's FindSubmatchIndex would find in what has
// come so far (the end of the data is the end of the text to ^, $, \b),
// without spending the threads, which may still go on to another.
//
// It counts its work as it goes, in steps (instructions visited), and
// charges it to its probe's budget: the probe's deadline ends a scan,
// however costly the expression, as it ends a read, and the caller's
// budget of steps (Limiter.Spend) holds it to its share of the CPU.
//
// Its memory is what expectCost's run part counts, allocated at once:
// queues sized by the program, and the captures of two threads for each
// instruction that consumes a rune or matches (a thread waits at one),
// which is the most there can be: one in the queue, one among the seeds.
type matcher struct {
	p *expectProg
	b *budget

	// pos is where the data scanned ends; prev is the rune before it, or
	// -1 at the start.
	pos  int
	prev rune
	// seeds are the threads that consumed the rune before pos, in
	// priority order: their closure at pos waits for the rune after pos
	// (or the end), which decides the empty-width conditions there.
	seeds []entry
	// matched says a match was found, matchcap where: a match still
	// open to threads of higher priority.
	matched  bool
	matchcap []int
	// done says the outcome is settled whatever comes: a match no thread
	// can better, or no match possible (an expression anchored at the
	// start, past it).
	done bool

	q queue
	// caps holds each thread's captures: thread t's are
	// caps[t*ncap:][:ncap]. pool are the threads free.
	caps  []int
	pool  []int32
	stack []job
	// startcap and capbuf are the captures a closure starts from, found
	// those of the match finish finds.
	startcap, capbuf, found []int
}

// queue is a sparse set of instructions, with their threads, in priority
// order (https://research.swtch.com/sparse).
type queue struct {
	sparse []uint32
	dense  []entry
}

// entry is an instruction in a queue, and the thread waiting there (a path
// through the program, with its captures), or noThread.
type entry struct {
	pc uint32
	t  int32
}

const noThread = -1

// job is a step of a closure left for later: an instruction to visit, or
// (arg >= 0) a capture position to restore.
type job struct {
	pc  uint32
	arg int32
	old int
}

// endOfText is the rune past the end.
const endOfText rune = -1

// checkEvery is how many steps a scan takes between looks at the clock
// and charges to the caller's budget: some hundred microseconds at the
// most a step can cost.
const checkEvery = 4096

// budget is what a probe's matching may spend: its context and deadline,
// which end a scan however costly the expression, and its caller's
// budget of steps (Limiter.Spend), charged checkEvery steps at a time.
// One budget serves every expect of a probe, so that cheap expects add up
// to a charge as one costly expect does.
type budget struct {
	ctx      context.Context
	deadline time.Time
	// limiter charges the steps; nil charges nothing.
	limiter Limiter
	// work counts the steps taken since the last charge.
	work int
}

// spend counts steps taken. Every checkEvery of them it looks at the
// clock and charges them to the caller, waiting while the caller is over
// its budget. It fails when the probe's context ends or its deadline
// passes first, with the error a read would have: so an expect that its
// budget cannot pay for in time ends as a timeout.
func (b *budget) spend(steps int) error {
	if b.work += steps; b.work < checkEvery {
		return nil
	}
	steps, b.work = b.work, 0
	if err := b.overdue(); err != nil {
		return err
	}
	if b.limiter == nil {
		return nil
	}
	if err := b.limiter.Spend(b.ctx, steps); err != nil {
		// Spend fails only once the context has ended: its cause is
		// the expect's.
		if over := b.overdue(); over != nil {
			return over
		}
		return fmt.Errorf("match: %w", err)
	}
	return nil
}

// overdue returns why matching is to stop: the probe's context ended or
// its deadline passed.
func (b *budget) overdue() error {
	if err := b.ctx.Err(); err != nil {
		return context.Cause(b.ctx)
	}
	if !b.deadline.IsZero() && !time.Now().Before(b.deadline) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func newMatcher(b *budget, p *expectProg) *matcher {
	n, threads := len(p.prog.Inst), 2*p.threads
	m := &matcher{
		p: p, b: b,
		q:        queue{sparse: make([]uint32, n), dense: make([]entry, 0, n)},
		seeds:    make([]entry, 0, p.threads),
		caps:     make([]int, threads*p.ncap),
		pool:     make([]int32, threads),
		stack:    make([]job, 0, n),
		matchcap: make([]int, p.ncap),
		startcap: make([]int, p.ncap),
		capbuf:   make([]int, p.ncap),
		found:    make([]int, p.ncap),
	}
	for i := range m.pool {
		m.pool[i] = int32(i)
	}
	m.reset()
	return m
}

// cap returns thread t's captures.
func (m *matcher) cap(t int32) []int {
	n := m.p.ncap
	return m.caps[int(t)*n : int(t)*n+n]
}

// reset starts the matcher again at the start of a text.
func (m *matcher) reset() { m.resetAfter(endOfText) }

// resetAfter starts the matcher again on data that goes on from prev, the
// rune before it (endOfText: the start of a text): past the start of a
// text, and at a line's start only when prev ended a line.
func (m *matcher) resetAfter(prev rune) {
	m.pos, m.prev, m.matched, m.done = 0, prev, false, m.p.cond == ^syntax.EmptyOp(0)
	for _, s := range m.seeds {
		m.pool = append(m.pool, s.t)
	}
	m.seeds = m.seeds[:0]
	for i := range m.startcap {
		m.startcap[i] = -1
	}
}

// scan goes on over data[m.pos:] (data grows between calls, its start
// unchanged) and returns the match, its capture positions as
// regexp.FindSubmatchIndex gives them, that regexp would find in what it
// has scanned, or nil. That is all of data when final; otherwise a rune
// the end of data cuts in two waits for its other bytes, where regexp
// would take the first of them for an invalid rune. It fails only when
// the context or the deadline ends first.
func (m *matcher) scan(data []byte, final bool) ([]int, error) {
	for !m.done && m.pos < len(data) {
		if !m.matched && len(m.seeds) == 0 {
			if i := m.skip(data); i > 0 {
				m.pos += i
				m.prev, _ = utf8.DecodeLastRune(data[:m.pos])
				continue
			}
		}
		r, w := rune(data[m.pos]), 1
		if r >= utf8.RuneSelf {
			if !final && !utf8.FullRune(data[m.pos:]) {
				break
			}
			r, w = utf8.DecodeRune(data[m.pos:])
		}
		if err := m.b.spend(m.step(r, w)); err != nil {
			return nil, err
		}
	}
	return m.finish(), nil
}

// skip returns how many bytes from m.pos no match can start in, when no
// thread is under way: those before the first byte of the literal every
// match starts with, which is never inside a rune; or, when every match
// starts at a line's start (^ in multi-line mode, the usual expect),
// those up to the next line's start. The rest of the machine steps over
// bytes a few times slower than bytes.IndexByte does.
func (m *matcher) skip(data []byte) int {
	rest := data[m.pos:]
	var i int
	switch {
	case m.p.prefix != "":
		i = bytes.IndexByte(rest, m.p.prefix[0])
	case m.p.cond&syntax.EmptyBeginLine != 0 && m.prev != '\n' && m.prev != endOfText:
		if i = bytes.IndexByte(rest, '\n'); i >= 0 {
			// The line starts after its terminator, which is stepped
			// over as any byte.
			return i
		}
	default:
		return 0
	}
	if i < 0 {
		return len(rest)
	}
	return i
}

// step consumes r, of w bytes, at m.pos: the seeds' closures first, then
// a new thread from the start (unless a match was found), then each
// thread in order, a match cutting off the threads after it. It returns
// the work done: the instructions visited.
func (m *matcher) step(r rune, w int) (work int) {
	flag := newFlag(m.prev, r)
	q := &m.q
	q.dense = q.dense[:0]
	m.closeSeeds(flag)
	if len(q.dense) == 0 && (m.matched || m.p.cond&syntax.EmptyBeginText != 0 && m.prev != endOfText) {
		m.done = true
		return 1
	}
	if !m.matched {
		m.startcap[0] = m.pos
		m.add(uint32(m.p.prog.Start), m.startcap, flag, false)
	}
	work = len(q.dense) + 1
	for j := 0; j < len(q.dense); j++ {
		e := q.dense[j]
		if e.t == noThread {
			continue
		}
		in := &m.p.prog.Inst[e.pc]
		ok := false
		switch in.Op {
		case syntax.InstMatch:
			cap := m.cap(e.t)
			cap[1] = m.pos
			copy(m.matchcap, cap)
			m.matched = true
			for _, d := range q.dense[j:] {
				if d.t != noThread {
					m.pool = append(m.pool, d.t)
				}
			}
			q.dense = q.dense[:0]
			continue
		case syntax.InstRune:
			ok = in.MatchRune(r)
		case syntax.InstRune1:
			ok = r == in.Rune[0]
		case syntax.InstRuneAny:
			ok = true
		case syntax.InstRuneAnyNotNL:
			ok = r != '\n'
		}
		if ok {
			m.seeds = append(m.seeds, entry{pc: in.Out, t: e.t})
		} else {
			m.pool = append(m.pool, e.t)
		}
	}
	q.dense = q.dense[:0]
	m.prev, m.pos = r, m.pos+w
	return work
}

// closeSeeds adds the seeds' closures to the queue, in order, under flag,
// and gives their threads back.
func (m *matcher) closeSeeds(flag lazyFlag) {
	for _, s := range m.seeds {
		copy(m.capbuf, m.cap(s.t))
		m.pool = append(m.pool, s.t)
		m.add(s.pc, m.capbuf, flag, false)
	}
	m.seeds = m.seeds[:0]
}

// finish returns the match if the text ended at m.pos, leaving the
// threads as they are. At the end only a match instruction can go on,
// so the first the closures reach, in order, is the match; failing one,
// the match found before, if any.
func (m *matcher) finish() []int {
	if m.done {
		if m.matched {
			return m.matchcap
		}
		return nil
	}
	flag := newFlag(m.prev, endOfText)
	m.q.dense = m.q.dense[:0]
	defer func() { m.q.dense = m.q.dense[:0] }()
	for _, s := range m.seeds {
		copy(m.capbuf, m.cap(s.t))
		if m.add(s.pc, m.capbuf, flag, true) {
			return m.found
		}
	}
	if !m.matched {
		m.startcap[0] = m.pos
		if m.add(uint32(m.p.prog.Start), m.startcap, flag, true) {
			return m.found
		}
		return nil
	}
	return m.matchcap
}

// add adds to the queue the instructions reached from pc by empty-width
// steps under flag, in priority order, as regexp's machine.add does, with
// threads holding cap where they wait. Captures are set in cap as they
// are passed, and restored. When final, it adds no threads: it stops at
// the first match instruction, with its captures in found, and reports
// whether there was one.
func (m *matcher) add(pc uint32, cap []int, flag lazyFlag, final bool) bool {
	q, insts := &m.q, m.p.prog.Inst
	m.stack = append(m.stack[:0], job{pc: pc, arg: -1})
	for len(m.stack) > 0 {
		j := m.stack[len(m.stack)-1]
		m.stack = m.stack[:len(m.stack)-1]
		if j.arg >= 0 {
			cap[j.arg] = j.old
			continue
		}
		for pc := j.pc; pc != 0; {
			if k := q.sparse[pc]; k < uint32(len(q.dense)) && q.dense[k].pc == pc {
				break
			}
			k := len(q.dense)
			q.dense = append(q.dense, entry{pc: pc, t: noThread})
			q.sparse[pc] = uint32(k)
			in := &insts[pc]
			switch in.Op {
			case syntax.InstAlt, syntax.InstAltMatch:
				m.stack = append(m.stack, job{pc: in.Arg, arg: -1})
				pc = in.Out
			case syntax.InstEmptyWidth:
				pc = 0
				if flag.match(syntax.EmptyOp(in.Arg)) {
					pc = in.Out
				}
			case syntax.InstNop:
				pc = in.Out
			case syntax.InstCapture:
				if int(in.Arg) < len(cap) {
					m.stack = append(m.stack, job{arg: int32(in.Arg), old: cap[in.Arg]})
					cap[in.Arg] = m.pos
				}
				pc = in.Out
			case syntax.InstMatch, syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
				if final {
					if in.Op == syntax.InstMatch {
						copy(m.found, cap)
						m.found[1] = m.pos
						m.unwind(cap)
						return true
					}
				} else {
					t := m.pool[len(m.pool)-1]
					m.pool = m.pool[:len(m.pool)-1]
					copy(m.cap(t), cap)
					q.dense[k].t = t
				}
				pc = 0
			default: // InstFail
				pc = 0
			}
		}
	}
	return false
}

// unwind restores the captures the jobs left would have restored.
func (m *matcher) unwind(cap []int) {
	for i := len(m.stack) - 1; i >= 0; i-- {
		if j := m.stack[i]; j.arg >= 0 {
			cap[j.arg] = j.old
		}
	}
	m.stack = m.stack[:0]
}

// lazyFlag is the runes on either side of a position, from which the
// empty-width conditions there are read when an instruction asks, as
// regexp's lazyFlag is.
type lazyFlag uint64

func newFlag(before, after rune) lazyFlag {
	return lazyFlag(uint64(before)<<32 | uint64(uint32(after)))
}

func (f lazyFlag) match(op syntax.EmptyOp) bool {
	if op == 0 {
		return true
	}
	return op&^syntax.EmptyOpContext(rune(f>>32), rune(f)) == 0
}
