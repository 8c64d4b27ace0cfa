// Package batchwriter batches small writes, such as log lines, into few
// large ones: a probe server's audit log is one line a probe, and one
// write(2) each cost a quarter of its throughput. Lines reach the
// underlying writer within an interval, and at once on Flush and Close.
//
// A line is never dropped. When the underlying writer cannot keep up and
// the buffer is full, Write waits for room (backpressure): the probes that
// log slow down with their log instead of losing it, and Stats says how
// long they waited.
package batchwriter

import (
	"io"
	"sync"
	"time"
)

// Writer is a batching io.Writer, safe for concurrent use.
type Writer struct {
	w        io.Writer
	interval time.Duration
	max      int

	// flushMu serializes writes to w.
	flushMu sync.Mutex

	mu      sync.Mutex
	room    *sync.Cond // signalled when a batch has been taken
	buf     []byte
	spare   []byte
	closed  bool
	err     error
	stats   Stats
	kick    chan struct{}
	stopped chan struct{}
}

// Stats counts what a Writer has done.
type Stats struct {
	// Writes is the writes taken (lines, for a log), Batches the writes
	// made of them, Bytes their size.
	Writes, Batches, Bytes uint64
	// Waited is the time writes spent waiting for room.
	Waited time.Duration
}

// New returns a Writer that writes to w at least every interval, and
// holds at most max bytes before Write waits.
func New(w io.Writer, interval time.Duration, max int) *Writer {
	b := &Writer{w: w, interval: interval, max: max, kick: make(chan struct{}, 1), stopped: make(chan struct{})}
	b.room = sync.NewCond(&b.mu)
	go b.run()
	return b
}

// Write takes p whole into the batch, waiting for room when the batch is
// full. Once the Writer is closed, it writes through.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if len(b.buf) > 0 && len(b.buf)+len(p) > b.max && !b.closed {
		start := time.Now()
		for len(b.buf) > 0 && len(b.buf)+len(p) > b.max && !b.closed {
			b.signal()
			b.room.Wait()
		}
		b.stats.Waited += time.Since(start)
	}
	if b.closed {
		b.mu.Unlock()
		// What is still batched goes first.
		b.Flush()
		b.flushMu.Lock()
		defer b.flushMu.Unlock()
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	b.stats.Writes++
	if len(b.buf) >= b.max/2 {
		b.signal()
	}
	err := b.err
	b.mu.Unlock()
	return len(p), err
}

// signal asks the flusher for a batch now.
func (b *Writer) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *Writer) run() {
	defer close(b.stopped)
	tick := time.NewTicker(b.interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-b.kick:
		}
		b.mu.Lock()
		closed := b.closed
		b.mu.Unlock()
		b.Flush()
		if closed {
			return
		}
	}
}

// Flush writes what is batched, and returns the first error the
// underlying writer has returned.
func (b *Writer) Flush() error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	batch := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.room.Broadcast()
	b.mu.Unlock()
	if len(batch) == 0 {
		b.mu.Lock()
		b.spare = batch
		err := b.err
		b.mu.Unlock()
		return err
	}
	_, err := b.w.Write(batch)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Batches++
	b.stats.Bytes += uint64(len(batch))
	if err != nil && b.err == nil {
		b.err = err
	}
	b.spare = batch[:0]
	return b.err
}

// Close flushes what is batched and stops batching: later writes go
// straight through.
func (b *Writer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.room.Broadcast()
	b.mu.Unlock()
	b.signal()
	<-b.stopped
	return b.Flush()
}

// Stats returns the counts so far.
func (b *Writer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}
