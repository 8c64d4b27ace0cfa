package main

import (
	"io"
	"strings"
	"testing"
)

// TestParseOptions checks the command line: a part -only does not know
// (a typo, "fanot") is an error naming the parts, not an empty table.
func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"all parts", nil, ""},
		{"one part", []string{"-only", "fanout"}, ""},
		{"a typo", []string{"-only", "fanot"}, `-only "fanot": no such part; the parts are latency, connect, ghz, fetch, scrape, inflight or fanout`},
		{"two parts", []string{"-only", "connect,fetch"}, `-only "connect,fetch": no such part; the parts are latency, connect, ghz, fetch, scrape, inflight or fanout`},
		{"no rounds", []string{"-rounds", "0"}, "-rounds must be at least 1"},
		{"one P for probed", []string{"-probed-gomaxprocs", "1"}, ""},
		{"fewer than no Ps", []string{"-probed-gomaxprocs", "-1"}, "-probed-gomaxprocs must be 0 or more"},
		{"an argument", []string{"fanout"}, `unexpected arguments ["fanout"]: every option is a flag`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseOptions(tc.args, io.Discard)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.err {
				t.Errorf("error %q, want %q", got, tc.err)
			}
		})
	}
}

// TestHeader checks that the report's first line says where each part
// runs: the fanout part over a LAN of namespaces, not over loopback.
func TestHeader(t *testing.T) {
	for only, want := range map[string]string{
		"":       ": latency, connect, ghz, fetch, scrape, inflight over loopback; fanout over a LAN of network namespaces, a probed in each",
		"fanout": ": fanout over a LAN of network namespaces, a probed in each",
		"fetch":  ": fetch over loopback",
	} {
		if got := header(options{only: only}); !strings.HasSuffix(got, want) || !strings.HasPrefix(got, "netprobe bench: go") {
			t.Errorf("-only %q: %q, want it to end %q", only, got, want)
		}
	}
}
