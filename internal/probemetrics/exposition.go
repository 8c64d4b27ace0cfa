package probemetrics

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Exposition is what a scrape of /probe answers with: a probe's metrics,
// or a fan-out's. Gather gives them as a registry holding them would
// (prometheus's Registry.Gather, the parts with a vantage registered
// through WrapRegistererWith), for expfmt to encode in any format;
// AppendText writes the two text formats straight away, as expfmt would
// write what Gather gives. Both do so in the caller's goroutine: a
// Registry's Gather starts a goroutine and makes two channels of a
// thousand metrics, which took a third of /probe's rate here (bench).
// TestGather and TestFanoutGather hold both to a registry's.
type Exposition struct {
	parts []*probeMetrics
}

// family is the samples of one name, sorted as a registry sorts them.
type family struct {
	of   *metric
	rows []row
}

// row is a sample in a family, with the vantage its part gives it.
type row struct {
	*sample
	vantage string
}

// label is row's i-th label, i in the order of their names (the vantage
// label among them), as a registry gives them.
func (r row) label(i int) (name, value string) {
	m := r.of
	if r.vantage != "" {
		at, _ := slices.BinarySearchFunc(m.sorted, vantageLabel, func(j int, v string) int { return strings.Compare(m.labels[j], v) })
		switch {
		case i == at:
			return vantageLabel, r.vantage
		case i > at:
			i--
		}
	}
	j := m.sorted[i]
	return m.labels[j], r.values[j]
}

// labels is how many labels r has.
func (r row) labels() int {
	if r.vantage != "" {
		return len(r.values) + 1
	}
	return len(r.values)
}

// families are the parts' samples by name, sorted by name, each sorted by
// its label values; or an error for a sample given twice or a label value
// that is not UTF-8, which a registry refuses too.
func families(parts []*probeMetrics) ([]*family, error) {
	var out []*family
	for _, p := range parts {
		for i := range p.samples {
			s := &p.samples[i]
			var f *family
			for _, g := range out {
				if g.of.name == s.of.name {
					f = g
					break
				}
			}
			if f == nil {
				f = &family{of: s.of}
				out = append(out, f)
			}
			f.rows = append(f.rows, row{sample: s, vantage: p.vantage})
		}
	}
	slices.SortFunc(out, func(a, b *family) int { return strings.Compare(a.of.name, b.of.name) })
	for _, f := range out {
		// A registry puts the metric with fewer labels first; a probe's
		// metrics of a name all have the same labels.
		slices.SortFunc(f.rows, compareRows)
		for i, r := range f.rows {
			for l := range r.labels() {
				if name, v := r.label(l); !utf8.ValidString(v) {
					return nil, fmt.Errorf("metric %s: label %s=%q is not UTF-8", f.of.name, name, v)
				}
			}
			// Sorted, the same series are neighbours.
			if i > 0 && compareRows(f.rows[i-1], r) == 0 {
				return nil, fmt.Errorf("metric %s %v given twice", f.of.name, r.values)
			}
		}
	}
	return out, nil
}

// compareRows orders rows as a registry orders the metrics of a family:
// by their label values; then, which a registry would refuse, by their
// label names, so that rows alike in both are neighbours.
func compareRows(a, b row) int {
	if c := cmp.Compare(a.labels(), b.labels()); c != 0 {
		return c
	}
	for i := range a.labels() {
		_, av := a.label(i)
		_, bv := b.label(i)
		if c := strings.Compare(av, bv); c != 0 {
			return c
		}
	}
	for i := range a.labels() {
		an, _ := a.label(i)
		bn, _ := b.label(i)
		if c := strings.Compare(an, bn); c != 0 {
			return c
		}
	}
	return 0
}

// Gather gives the metrics as a registry holding them would.
func (e *Exposition) Gather() ([]*dto.MetricFamily, error) {
	fs, err := families(e.parts)
	if err != nil {
		return nil, err
	}
	out := make([]*dto.MetricFamily, len(fs))
	for i, f := range fs {
		mf := &dto.MetricFamily{Name: proto.String(f.of.name), Help: proto.String(f.of.help), Type: dto.MetricType_GAUGE.Enum(), Metric: make([]*dto.Metric, len(f.rows))}
		for j, r := range f.rows {
			m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(r.value)}, Label: make([]*dto.LabelPair, r.labels())}
			for l := range m.Label {
				name, v := r.label(l)
				m.Label[l] = &dto.LabelPair{Name: proto.String(name), Value: proto.String(v)}
			}
			mf.Metric[j] = m
		}
		out[i] = mf
	}
	return out, nil
}

// AppendText appends the metrics to b as expfmt encodes what Gather gives:
// in Prometheus's text format (version 0.0.4 or 1.0.0, which differ only
// in what names may be, and in their escaping) or, with openMetrics, in
// OpenMetrics 1.0.0 (or 0.0.1), with its "# EOF". With only, only the
// families it names are written, as promhttp's name[] does. The names
// are written as they are: they are Prometheus's classic names, which no
// format escapes or quotes (netprobe's, blackbox_exporter's, and a
// module's probe_expect_info labels, which modules holds to them).
func (e *Exposition) AppendText(b []byte, openMetrics bool, only map[string]bool) ([]byte, error) {
	fs, err := families(e.parts)
	if err != nil {
		return b, err
	}
	for _, f := range fs {
		if only != nil && !only[f.of.name] {
			continue
		}
		b = append(b, "# HELP "...)
		b = append(b, f.of.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.of.help, openMetrics)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.of.name...)
		b = append(b, " gauge\n"...)
		for _, r := range f.rows {
			b = append(b, f.of.name...)
			if n := r.labels(); n > 0 {
				sep := byte('{')
				for l := range n {
					name, v := r.label(l)
					b = append(b, sep)
					sep = ','
					b = append(b, name...)
					b = append(b, `="`...)
					b = appendEscaped(b, v, true)
					b = append(b, '"')
				}
				b = append(b, '}')
			}
			b = append(b, ' ')
			b = appendFloat(b, r.value, openMetrics)
			b = append(b, '\n')
		}
	}
	if openMetrics {
		b = append(b, "# EOF\n"...)
	}
	return b, nil
}

// appendEscaped appends s with its backslashes and newlines escaped, and
// with quote its double quotes, as expfmt escapes label values (and
// OpenMetrics' help).
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := range len(s) {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat appends f as expfmt writes a sample's value: OpenMetrics
// gives an integer a ".0".
func appendFloat(b []byte, f float64, openMetrics bool) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	case f == 0:
		// -0 too.
		f = 0
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	if openMetrics && !bytes.ContainsAny(b[start:], "e.") {
		b = append(b, ".0"...)
	}
	return b
}
