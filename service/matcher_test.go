package service

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// matcherPatterns are expressions that reach every part of the matcher:
// anchors at line and text boundaries, word boundaries, greedy and lazy
// repeats, alternations whose priority decides the match, captures that
// take part or not, empty matches, case folding, classes and invalid
// UTF-8.
var matcherPatterns = []string{
	``, `^220 `, `^220 (.*)$`, `PING :([^ ]+)`, `a+`, `a*?`, `(a|ab)(c|bcd)(d*)`, `(a*)+$`, `(a*)*b`,
	`\bfoo\b`, `\Bo\B`, `$`, `^$`, `(?s).*`, `x*`, `\A\x78[\x00-\x7f]`, `(?i)héllo`, `[^ ]+$`, `a{2,3}?`,
	`(?:(a)|(b))+`, `\z`, `(?-m:^)ab|b$`, `.`, `\x{FFFD}`, `OK.*STARTTLS`, `(?P<t>\w+) (\w+)( missing)?`,
	`^SSH-2.0-([^ -]+)(?: (.*))?$`, `\pL+`, `(?U)a+b?`, `(a(b(c)?)?)?d`, `^(a|b)`, `^\b\w+$`, `(?s)^.`,
}

// matcherTexts are what peers send them.
var matcherTexts = []string{
	"", "220 mail ESMTP\r\n250 ok\r\n", "NOTICE hello\r\nPING :x42\r\nmore\r\n", "aaab", "abcd", "abbcdd",
	"foo bar\nfoo", "xx\xffx\xe2\x82", "h\xc3\xa9llo H\xc3\x89LLO", "héllo wörld", "a\n\nb\n", "SSH-2.0-OpenSSH_9 Debian\r\n",
	"x\x78\x05\x0a\x01\x00", "+OK STARTTLS", "ba", "\n", "aaaaaaaaaaaaaaaaaaaaaaaa", "€€€\xe2\x82",
}

// regexpMatch is what regexp finds in data as a fetch used to look for a
// match: in all of it, or when not final, up to the end of its last
// whole rune (the matcher waits for a rune's other bytes).
func regexpMatch(re *regexp.Regexp, data []byte, final bool) []int {
	end := len(data)
	if !final {
		for i := 0; i < len(data); {
			if !utf8.FullRune(data[i:]) {
				end = i
				break
			}
			_, w := utf8.DecodeRune(data[i:])
			i += w
		}
	}
	return re.FindSubmatchIndex(data[:end])
}

// checkMatcher feeds text to a matcher in chunks whose sizes splits gives,
// as a fetch does, and checks that after each it reports what regexp
// finds in the text so far.
func checkMatcher(t *testing.T, pattern string, text, splits []byte) {
	t.Helper()
	var v violations
	p := (&expects{}).compile(&v, "expect", pattern)
	if p == nil {
		return
	}
	re := regexp.MustCompile("(?m)" + pattern)
	m := newMatcher(&budget{ctx: context.Background()}, p)
	end := 0
	for k := 0; ; k++ {
		if len(splits) > 0 {
			end = min(len(text), end+1+int(splits[k%len(splits)]%7))
		} else {
			end = len(text)
		}
		final := end == len(text)
		got, err := m.scan(text[:end], final)
		if err != nil {
			t.Fatalf("%q over %q: %v", pattern, text[:end], err)
		}
		if want := regexpMatch(re, text[:end], final); !slices.Equal(got, want) {
			t.Fatalf("%q over %q (final %v, in chunks of %v): %v, regexp finds %v", pattern, text[:end], final, splits, got, want)
		}
		if got != nil || final {
			return
		}
	}
}

// TestMatcherAsRegexp checks that the matcher finds what regexp does, over
// text received whole, a byte at a time, or in uneven chunks.
func TestMatcherAsRegexp(t *testing.T) {
	for _, pattern := range matcherPatterns {
		for _, text := range matcherTexts {
			for _, splits := range [][]byte{nil, {1}, {2, 3}, {5, 1, 4}} {
				checkMatcher(t, pattern, []byte(text), splits)
			}
		}
	}
}

// FuzzMatcher checks the matcher against regexp: the same match, found
// on the chunk that completes it, whatever the expression, the text and
// how it is split.
func FuzzMatcher(f *testing.F) {
	for i, pattern := range matcherPatterns {
		f.Add(pattern, []byte(matcherTexts[i%len(matcherTexts)]), []byte{1, 3})
	}
	f.Fuzz(func(t *testing.T, pattern string, text, splits []byte) {
		checkMatcher(t, pattern, text, splits)
	})
}

// TestMatcherLinear feeds an expression that never matches 64 KiB a line
// at a time, as a peer sending a short line every half millisecond does,
// and after each line writes over what came before it what the expression
// looks for: the matcher never finds it, as it never looks at a byte
// twice, where matching what is pending again on each chunk looked at
// each byte some 4,000 times.
func TestMatcherLinear(t *testing.T) {
	var v violations
	for _, pattern := range []string{`^250 (never)`, `(250|421) never`} {
		p := (&expects{}).compile(&v, "expect", pattern)
		m := newMatcher(&budget{ctx: context.Background()}, p)
		line, bait := []byte("220-still here\r\n"), []byte("250 never\r\n")
		var data []byte
		for len(data) < expectWindow {
			data = append(data, line...)
			if loc, err := m.scan(data, false); loc != nil || err != nil {
				t.Fatalf("%q after %d bytes: %v, %v: it looked back", pattern, len(data), loc, err)
			}
			past := data[:len(data)-len(line)]
			for i := 0; i+len(bait) <= len(past); i += len(bait) {
				copy(past[i:], bait)
			}
		}
		if m.pos != len(data) {
			t.Errorf("%q: scanned to %d of %d bytes", pattern, m.pos, len(data))
		}
	}
}

// TestMatcherDeadline runs a costly expression over a long text with a
// deadline that has passed, and with a context cancelled: the scan stops
// within a few thousand steps, with the error a read would have.
func TestMatcherDeadline(t *testing.T) {
	var v violations
	p := (&expects{}).compile(&v, "expect", `(.{60}|x)(.{60}|y)z`)
	if p == nil {
		t.Fatal(v.err())
	}
	text := []byte(strings.Repeat("b", 1<<20))
	m := newMatcher(&budget{ctx: context.Background(), deadline: time.Now().Add(-time.Second)}, p)
	if _, err := m.scan(text, true); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past its deadline: %v, want a deadline error", err)
	}
	if m.pos > 1000 {
		t.Errorf("past its deadline, the scan went on for %d bytes", m.pos)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("the caller left")
	cancel(cause)
	m = newMatcher(&budget{ctx: ctx}, p)
	if _, err := m.scan(text, true); !errors.Is(err, cause) {
		t.Errorf("with its context cancelled: %v, want %v", err, cause)
	}
}
