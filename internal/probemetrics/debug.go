package probemetrics

import (
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/encoding/protojson"
)

// WriteDebug writes the page debug=true answers: the probe's log, its
// metrics and its report, as text for a person.
func (r *Result) WriteDebug(w io.Writer, log []byte, reg *prometheus.Registry) {
	fmt.Fprintf(w, "Logs for the probe:\n%s\n\nMetrics that would have been returned:\n", log)
	families, _ := reg.Gather()
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		enc.Encode(f)
	}
	fmt.Fprintln(w, "\n\nThe probe's report:")
	opts := protojson.MarshalOptions{Multiline: true}
	if r.connect != nil {
		b, _ := opts.Marshal(r.connect)
		fmt.Fprintf(w, "connect: %s\n", b)
	}
	for _, m := range r.matches {
		b, _ := opts.Marshal(m)
		fmt.Fprintf(w, "match: %s\n", b)
	}
	if r.summary != nil {
		b, _ := opts.Marshal(r.summary)
		fmt.Fprintf(w, "summary: %s\n", b)
	}
}
