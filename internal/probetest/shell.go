package probetest

import "strings"

// ShellWords splits a doc's command line as the shell would at spaces and
// newlines, but not inside single quotes, for the tests that run the
// docs' examples; ok is false when a quote is left open.
func ShellWords(s string) (words []string, ok bool) {
	var word strings.Builder
	quoted, in := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case (r == ' ' || r == '\n') && !quoted:
			if in {
				words = append(words, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, word.String())
	}
	return words, !quoted
}
