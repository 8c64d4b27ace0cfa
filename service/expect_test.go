package service

import (
	"context"
	"fmt"
	"math"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/starttls"
)

// heldBy returns how many bytes of heap what keep returns holds, once
// collected.
func heldBy(keep func() any) int64 {
	// The heap is the process's: what other goroutines allocate meanwhile
	// (a server a test before this one left behind) counts too. The least
	// of three tries is the nearest to keep's own.
	least := int64(math.MaxInt64)
	for range 3 {
		var before, after runtime.MemStats
		// Twice: what the first frees can free more (sync.Pool's caches).
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&before)
		kept := keep()
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(kept)
		least = min(least, int64(after.HeapAlloc)-int64(before.HeapAlloc))
	}
	return least
}

// checkCost compiles the expressions of a request, then runs each over
// text, and checks the bounds their memory is held to: the compiled
// programs hold no more than the request's count of them, itself within
// maxRequestExpectBytes, and each program with the state of a matcher
// that has run over text no more than its cost, within maxExpectCost.
func checkCost(t *testing.T, sources []string, text []byte) {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector makes allocations larger")
	}
	var (
		v     violations
		e     expects
		progs = make([]*expectProg, 0, len(sources))
	)
	held := heldBy(func() any {
		for _, s := range sources {
			if p := e.compile(&v, "expect", s); p != nil {
				progs = append(progs, p)
			}
		}
		return &e
	})
	if len(v.list) > 0 {
		// A refused request is let go at once.
		return
	}
	if held > e.held || e.held > maxRequestExpectBytes {
		t.Errorf("%d expressions hold %d bytes compiled, counted as %d (cap %d)", len(progs), held, e.held, maxRequestExpectBytes)
	}
	for _, p := range progs {
		var m *matcher
		run := heldBy(func() any {
			m = newMatcher(&budget{ctx: context.Background()}, p)
			m.scan(text, false)
			return m
		})
		if run > p.cost.run || p.cost.total() > maxExpectCost {
			t.Errorf("%q: a matcher holds %d bytes, counted as %d (with its program %d, cap %d)", p.source, run, p.cost.run, p.cost.total(), maxExpectCost)
		}
		if n := int64(len(p.prog.Inst)); n > sizeOfSource(p.source).insts+2 {
			t.Errorf("%q: %d instructions, more than the %d bounded", p.source, n, sizeOfSource(p.source).insts+2)
		}
	}
}

func sizeOfSource(s string) progSize {
	re, err := parseExpect(s)
	if err != nil {
		panic(err)
	}
	return sizeOf(re)
}

// TestExpectCost checks the memory bounds on expressions near the caps:
// many threads, many captures, large classes, and the expects of
// blackbox_exporter's examples, which the caps must accept.
func TestExpectCost(t *testing.T) {
	text := []byte(strings.Repeat("b", 4096) + strings.Repeat("xa", 2048))
	for _, s := range []string{
		`(.{60}|x)(.{60}|y)z`, `(?:(a)|b)*` + strings.Repeat(`(x)`, 60), `[\pL\pN]{20}`, `(?i)\pL+\p{Greek}`, `(x*)*`,
		"^+OK", `^SSH-2.0-([^ -]+)(?: (.*))?$`, "PING :([^ ]+)", "^:[^ ]+ 001", "OK.*STARTTLS", `^220 ([^ ]+) ESMTP (.+)$`,
	} {
		checkCost(t, []string{s}, text)
	}
	var many []string
	for i := range 3000 {
		many = append(many, fmt.Sprintf("^220 host%d", i))
	}
	checkCost(t, many, text)
}

// FuzzExpectCost checks the memory bounds on any expressions (separated
// by NUL) and text.
func FuzzExpectCost(f *testing.F) {
	f.Add("^220 \x00(a|ab)(c|bcd)(d*)\x00\\pL{20}", []byte("220 abcd"))
	f.Add(`(.{60}|x)(.{60}|y)z`, []byte(strings.Repeat("b", 300)))
	f.Fuzz(func(t *testing.T, sources string, text []byte) {
		checkCost(t, strings.Split(sources, "\x00"), text)
	})
}

// TestExpectsOfModules checks that the caps accept every expect of
// blackbox_exporter's example configurations, of the built-in modules
// and of the STARTTLS dialogues, the dialogues' refusals with them.
func TestExpectsOfModules(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var dialogues [][]*netprobev1.Step
	for _, file := range []string{"../internal/modules/testdata/blackbox.yml", "../internal/modules/testdata/example.yml", ""} {
		set := modules.Defaults()
		if file != "" {
			if set, _, err = modules.Load(file); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range set.Names() {
			if m := set.Modules[name]; len(m.Steps) > 0 {
				dialogues = append(dialogues, m.Steps)
			}
		}
	}
	for _, name := range starttls.Names() {
		d, _ := starttls.Lookup(name)
		dialogues = append(dialogues, d.Steps)
	}
	expressions := 0
	for _, steps := range dialogues {
		var v violations
		exps := &expects{}
		s.validateSteps(&v, "", steps, false, true, exps)
		for _, fv := range v.list {
			if strings.Contains(fv.Field, "expect") || strings.HasSuffix(fv.Field, ".refusal") || fv.Field == "steps" {
				t.Errorf("%s: %s", fv.Field, fv.Description)
			}
		}
		for _, c := range exps.seen {
			if c.prog != nil {
				expressions++
			}
		}
	}
	if expressions < 20 {
		t.Errorf("%d expressions checked; the files have more", expressions)
	}
}

// TestTemplateAsExpand checks send_template's expansion against
// regexp.Expand's: references by number and name, braced or not, to
// groups that took part or not, $$, and malformed references.
func TestTemplateAsExpand(t *testing.T) {
	pattern := `(?P<first>\w+) (\w+)( missing)?(?P<first>x)?(?P<last>\w+)?`
	re := regexp.MustCompile("(?m)" + pattern)
	var v violations
	p := (&expects{}).compile(&v, "expect", pattern)
	src := []byte("PING now")
	loc := re.FindSubmatchIndex(src)
	groups := make([][]byte, len(loc)/2)
	for g := range groups {
		if loc[2*g] >= 0 {
			groups[g] = src[loc[2*g]:loc[2*g+1]]
		}
	}
	for _, tmpl := range []string{
		"PONG ${first} $2$3 $$\n", "$1x ${1}x $first_ $10 $01 ${last}$last", "$", "${", "${1", "$-", "a$$$1$", "${first}${2}", "$été", "",
	} {
		want := string(re.Expand(nil, []byte(tmpl), src, loc))
		if got := string(compileTemplate(tmpl, p).render(nil, groups)); got != want {
			t.Errorf("%q: %q, regexp.Expand makes %q", tmpl, got, want)
		}
		if got := string(compileTemplate(tmpl, nil).render(nil, nil)); got != string(regexp.MustCompile("").Expand(nil, []byte(tmpl), nil, []int{0, 0})) {
			t.Errorf("%q with no expect before: %q", tmpl, got)
		}
		if most := compileTemplate(tmpl, p).most; most < len(want) {
			t.Errorf("%q expands to %d bytes, more than the %d counted", tmpl, len(want), most)
		}
	}
}

// TestExpectLineSearchedOnce feeds an expect_line a long line a few bytes
// at a time, and after each chunk writes a line's end over what was
// searched: the search never finds it, as it goes on from where it
// stopped, where searching the partial line again on each chunk looked at
// each byte hundreds of times.
func TestExpectLineSearchedOnce(t *testing.T) {
	var v violations
	st := step{expect: (&expects{}).compile(&v, "expect_line", `^never`), line: true}
	f := &fetch{fetchParams: &fetchParams{}}
	m := newMatcher(&budget{ctx: context.Background()}, st.expect)
	for range 4096 {
		f.pending = append(f.pending, "0123456789abcdef"...)
		f.shown = len(f.pending)
		if _, loc, _, _, err := f.find(m, nil, st, false); loc != nil || err != nil {
			t.Fatalf("%v, %v", loc, err)
		}
		if f.scanned != 0 {
			t.Fatalf("a line ended at %d: the search looked back", f.scanned)
		}
		for i := range f.searched {
			f.pending[i] = '\n'
		}
	}
}

// TestExpectWindowSplit runs expect_lines (a module's query_response
// expect) and an expect over texts longer than expectWindow, sent in one
// write and split in many ways (net.Pipe hands each write to one read, so
// the split is exactly the reads the expect sees), and checks that the
// split never changes the outcome: a line over 64 KiB is never matched,
// one of up to 32 KiB always, one between by where it starts. A window
// that dropped by what was pending when a read came matched the long
// line when it came in one read and missed it when it came in several
// (checked).
func TestExpectWindowSplit(t *testing.T) {
	long := func(n int) string { return "BANNER " + strings.Repeat("A", n) + "\n" }
	var lines strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&lines, "line %d\n", i)
	}
	for _, tc := range []struct {
		name, text, expect string
		line               bool
		match              string // the outcome every split must give: the first group, or "" for none
	}{
		{"a line over 64 KiB", long(100000), `^BANNER A*(A{10})$`, true, ""},
		{"a line of 32 KiB", "x\n" + long(32760), `^BANNER A*(A{10})$`, true, "AAAAAAAAAA"},
		{"a line of 40 KiB at the start", long(40000), `^BANNER A*(A{10})$`, true, "AAAAAAAAAA"},
		{"a line of 48 KiB after 20 KiB", strings.Repeat("y\n", 10000) + long(48000), `^BANNER A*(A{10})$`, true, ""},
		{"a short line after it", strings.Repeat("y\n", 10000) + long(48000) + "BANNER short\n", `^BANNER (s\w+)$`, true, "short"},
		{"the last of 20,000 short lines", lines.String() + "OK 1\n", `^OK (\d)$`, true, "1"},
		{"the tail of a line over 64 KiB, to an expect_line", "BANNER " + strings.Repeat("A", 100000) + "END\n", `(A{3}END)$`, true, ""},
		{"the tail of a line over 64 KiB, to an expect", "BANNER " + strings.Repeat("A", 100000) + "END\n", `(A{3}END)`, false, "AAAEND"},
	} {
		var v violations
		st := step{expect: (&expects{}).compile(&v, "expect", tc.expect), line: tc.line}
		if v.err() != nil {
			t.Fatal(v.err())
		}
		outcomes := map[string]string{}
		for name, sizes := range map[string][]int{
			"one write":         {len(tc.text)},
			"1000 bytes a read": {1000},
			"at odd places":     {7, 32768, 3, 65535, 1},
			"32 KiB a read":     {32 << 10},
			"100 KiB a read":    {100 << 10},
		} {
			outcomes[name] = expectOver(t, tc.text, sizes, st)
		}
		for name, got := range outcomes {
			if got != tc.match {
				t.Errorf("%s, %s: matched %q, want %q (every split: %v)", tc.name, name, got, tc.match, outcomes)
			}
		}
	}
}

// expectOver runs st over a pipe whose peer writes text in writes of
// sizes (the last size repeated), and returns its first group, or "" when
// it did not match.
func expectOver(t *testing.T, text string, sizes []int, st step) string {
	t.Helper()
	client, peer := net.Pipe()
	defer client.Close()
	go func() {
		defer peer.Close()
		for i := 0; len(text) > 0; i++ {
			n := min(sizes[min(i, len(sizes)-1)], len(text))
			if _, err := peer.Write([]byte(text[:n])); err != nil {
				return
			}
			text = text[n:]
		}
	}()
	f := &fetch{
		fetchParams: &fetchParams{maxBytes: 1 << 30, steps: []step{st}},
		ctx:         context.Background(), conn: client, emit: discard, start: time.Now(), deadline: time.Now().Add(time.Minute),
		sum: &netprobev1.FetchSummary{},
	}
	matched, err := f.dialogue()
	if err != nil {
		t.Fatal(err)
	}
	if !matched {
		if f.sum.GetError().GetReason() != netprobev1.Reason_REASON_NO_MATCH {
			t.Fatalf("no match, and not NO_MATCH: %v", f.sum.GetError())
		}
		return ""
	}
	return string(f.groups[1])
}
