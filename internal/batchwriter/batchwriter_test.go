package batchwriter_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/batchwriter"
)

// TestLines writes lines from many goroutines through a pipe: every line
// arrives whole, in far fewer writes than lines, and Close flushes.
func TestLines(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := batchwriter.New(w, 100*time.Millisecond, 64<<10)
	read := make(chan []string)
	go func() {
		var lines []string
		s := bufio.NewScanner(r)
		for s.Scan() {
			lines = append(lines, s.Text())
		}
		read <- lines
	}()
	const writers, each = 16, 1000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				fmt.Fprintf(b, "writer %02d line %04d %s\n", g, i, strings.Repeat("x", 40))
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	lines := <-read
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	sort.Strings(lines)
	for g := range writers {
		for i := range each {
			want := fmt.Sprintf("writer %02d line %04d %s", g, i, strings.Repeat("x", 40))
			if got := lines[g*each+i]; got != want {
				t.Fatalf("line %q, want %q", got, want)
			}
		}
	}
	st := b.Stats()
	if st.Writes != writers*each || st.Batches == 0 || st.Batches > st.Writes/10 || st.Bytes != uint64(writers*each*61) {
		t.Errorf("stats %+v", st)
	}
}

// TestInterval: a lone line arrives within the interval, with no Flush.
func TestInterval(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	b := batchwriter.New(w, 50*time.Millisecond, 64<<10)
	defer b.Close()
	io.WriteString(b, "alone\n")
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "alone\n" {
		t.Errorf("read %q, %v", line, err)
	}
}

// blocked is a writer that holds each write until released.
type blocked struct {
	entered  chan string
	release  chan struct{}
	events   chan string
	mu       sync.Mutex
	received bytes.Buffer
}

func (bw *blocked) Write(p []byte) (int, error) {
	bw.entered <- string(p)
	<-bw.release
	bw.events <- "released"
	bw.mu.Lock()
	defer bw.mu.Unlock()
	return bw.received.Write(p)
}

// TestBackpressure: when the writer below cannot keep up and the buffer
// is full, Write waits for it, and nothing is dropped.
func TestBackpressure(t *testing.T) {
	bw := &blocked{entered: make(chan string, 4), release: make(chan struct{}), events: make(chan string, 8)}
	b := batchwriter.New(bw, time.Hour, 10)
	io.WriteString(b, "aaaaaaaa\n")
	// The second does not fit: the first goes to the writer, which holds it.
	io.WriteString(b, "bbbbbbbb\n")
	if got := <-bw.entered; got != "aaaaaaaa\n" {
		t.Fatalf("the first batch is %q", got)
	}
	// The third does not fit either, and the writer is still busy.
	go func() {
		io.WriteString(b, "cccccccc\n")
		bw.events <- "third written"
	}()
	select {
	case e := <-bw.events:
		t.Fatalf("%s while the writer was held", e)
	case <-time.After(100 * time.Millisecond):
	}
	close(bw.release)
	// The third is written once the first batch is: after it, whether the
	// second's batch is written before or after.
	if first := <-bw.events; first != "released" {
		t.Errorf("the first event is %q", first)
	}
	for e := range bw.events {
		if e == "third written" {
			break
		}
	}
	go func() {
		for range bw.entered {
		}
	}()
	go func() {
		for range bw.events {
		}
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := bw.received.String(); got != "aaaaaaaa\nbbbbbbbb\ncccccccc\n" {
		t.Errorf("received %q", got)
	}
	if st := b.Stats(); st.Waited <= 0 || st.Writes != 3 {
		t.Errorf("stats %+v: want the waits counted", st)
	}
}

// failing fails every write.
type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestError reports the writer's failure to Flush and to later writes.
func TestError(t *testing.T) {
	b := batchwriter.New(failing{}, time.Hour, 1<<10)
	io.WriteString(b, "x\n")
	if err := b.Flush(); err == nil || err.Error() != "disk full" {
		t.Errorf("Flush: %v", err)
	}
	if _, err := io.WriteString(b, "y\n"); err == nil {
		t.Error("a write after the failure reports none")
	}
	b.Close()
}

// TestAfterClose writes through once closed, after what was batched.
func TestAfterClose(t *testing.T) {
	var got bytes.Buffer
	b := batchwriter.New(&got, time.Hour, 1<<10)
	io.WriteString(b, "before\n")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(b, "after\n")
	if got.String() != "before\nafter\n" {
		t.Errorf("wrote %q", got.String())
	}
}
