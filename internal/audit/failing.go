package audit

import (
	"cmp"
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// FailingKept is how many failing targets the Recorder keeps. A target
// failing is kept until a probe of it succeeds; past FailingKept, the one
// whose latest failure is the oldest is forgotten (a target probed every
// scrape stays, one nobody probes any more goes first). An entry holds
// a few short strings and a message of at most messageKept bytes: 1.2 KB
// measured with a 250-character target and a 100-character caller, so
// FailingKept bounds the state to about 1.2 MB whatever callers probe.
const FailingKept = 1000

// messageKept is how much of a failure's message a failing target keeps:
// a message can quote an expect's whole regexp.
const messageKept = 256

// Failing is a target failing now: its probes through one way in (a
// /probe module or a gRPC method) have failed or been denied since the
// last that succeeded.
type Failing struct {
	// Last is the latest failure, with its report cut to its error (the
	// ring keeps the whole report for as long as it keeps the probe).
	Last *Probe
	// Since is when the current run of failures began: the first failure
	// after a success, or since the Recorder first saw the target.
	Since time.Time
	// Failures is how many probes of the run failed.
	Failures int

	first uint64 // the ID of the run's first failure
}

// failingKey is what makes a target failing: the target through a way
// in. A probe's caller is not part of it: a success from any caller
// clears the failure.
type failingKey struct{ via, target string }

// failing is the targets failing now, most recently failed first.
type failing struct {
	mu      sync.Mutex
	size    int
	byKey   map[failingKey]*list.Element // of *Failing, in order
	order   *list.List
	evicted uint64
}

func newFailing(size int) failing {
	return failing{size: size, byKey: make(map[failingKey]*list.Element, size), order: list.New()}
}

// note records p in the targets failing now: a failure or a denial
// starts or continues its target's run of failures, a success ends it,
// and an abandoned probe says nothing of the target.
func (f *failing) note(p *Probe) {
	key := failingKey{p.Via, p.Target}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.byKey[key]
	switch p.Outcome {
	case "ok":
		if e != nil {
			f.order.Remove(e)
			delete(f.byKey, key)
		}
		return
	case "abandoned":
		return
	}
	last := cut(p)
	if e != nil {
		run := e.Value.(*Failing)
		run.Last = last
		run.Failures++
		f.order.MoveToFront(e)
		return
	}
	if f.order.Len() >= f.size {
		oldest := f.order.Back()
		run := f.order.Remove(oldest).(*Failing)
		delete(f.byKey, failingKey{run.Last.Via, run.Last.Target})
		f.evicted++
	}
	f.byKey[key] = f.order.PushFront(&Failing{Last: last, Since: p.Time, Failures: 1, first: p.ID})
}

// cut is p with its report cut to its error, the error's message to
// messageKept bytes.
func cut(p *Probe) *Probe {
	c := *p
	c.ConnectResponse, c.Summary = nil, nil
	if p.Error != nil {
		c.Error = proto.CloneOf(p.Error)
		if m := c.Error.GetMessage(); len(m) > messageKept {
			c.Error.Message = strings.ToValidUTF8(m[:messageKept], "") + "…"
		}
	}
	return &c
}

// Failing returns the targets failing now, the newest run of failures
// first (a target that just broke is on top, and the rows keep their
// order while the same targets go on failing), and how many targets were
// forgotten to keep within FailingKept.
func (a *Recorder) Failing() (now []Failing, evicted uint64) {
	f := &a.failing
	f.mu.Lock()
	now = make([]Failing, 0, f.order.Len())
	for e := f.order.Front(); e != nil; e = e.Next() {
		now = append(now, *e.Value.(*Failing))
	}
	evicted = f.evicted
	f.mu.Unlock()
	slices.SortFunc(now, func(a, b Failing) int { return cmp.Compare(b.first, a.first) })
	return now, evicted
}

// lookup returns the latest failure of a target failing now whose ID is
// id.
func (f *failing) lookup(id uint64) *Probe {
	f.mu.Lock()
	defer f.mu.Unlock()
	for e := f.order.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*Failing).Last; p.ID == id {
			return p
		}
	}
	return nil
}
