package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/client"
)

// docs/fault-matrix.md's table stands between these lines.
const (
	tableBegin = "<!-- fault matrix: made from cmd/probed/matrix_linux_test.go by `go test ./cmd/probed -run TestMatrixTable -update` -->\n"
	tableEnd   = "<!-- end of fault matrix -->\n"
)

// TestMatrixTable checks that docs/fault-matrix.md's table is the matrix the tests
// run, so that the two cannot drift apart.
func TestMatrixTable(t *testing.T) {
	const doc = "../../docs/fault-matrix.md"
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	before, rest, ok1 := strings.Cut(text, tableBegin)
	old, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s has no fault matrix between %q and %q", doc, tableBegin, tableEnd)
	}
	want := matrixTable()
	if old == want {
		return
	}
	if *update {
		if err := os.WriteFile(doc, []byte(before+tableBegin+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/fault-matrix.md's table differs from the tests'; run go test ./cmd/probed -run TestMatrixTable -update\ndocs:\n%s\ntests:\n%s", old, want)
}

// matrixTable renders the matrix as a Markdown table.
func matrixTable() string {
	var b strings.Builder
	b.WriteString("| condition | stage / reason / errno | note |\n|---|---|---|\n")
	for _, r := range matrix {
		outcomes := make([]string, len(r.want))
		for i, o := range r.want {
			outcomes[i] = o.String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.condition, strings.Join(outcomes, "<br>or ")+timeoutNote(r), r.note)
	}
	return b.String()
}

// timeoutNote says within what time a row's timeout fires.
func timeoutNote(r row) string {
	if r.timeout == 0 || r.want[0].reason != client.ReasonTimeout {
		return ""
	}
	return fmt.Sprintf(" (at %v)", r.timeout)
}
