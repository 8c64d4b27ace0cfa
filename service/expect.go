package service

import (
	"fmt"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// An expect's regular expression is judged by what it costs compiled, not
// by its length: 1 KiB of source such as `\pL{1000}` repeated compiles to
// some 110,000 instructions, megabytes of program and as much again of
// state to match with. So validation parses each expression, bounds the
// size of its program from the parse tree (before anything is compiled),
// and refuses what costs more than the caps below. The expressions then run
// on matcher (matcher.go), whose memory that bound covers.
const (
	// maxExpectLength caps an expect's source, in bytes: it bounds the
	// work of parsing it.
	maxExpectLength = 1024
	// maxExpectCost caps what one expression costs, in bytes: its program
	// and the state a probe holds while matching it (expectCost). 64 KiB
	// holds a literal of some 400 characters, .{400} or 30 capture
	// groups; the expects of blackbox_exporter's example configurations,
	// of the built-in modules and of the STARTTLS dialogues cost 1.5 to
	// 5.5 KiB. It bounds the time a byte received costs too: every
	// instruction a thread may wait at, its captures copied.
	maxExpectCost = 64 << 10
	// maxRequestExpectBytes caps the compiled programs one request holds
	// for as long as it runs, in bytes: each distinct expression counted
	// once, however many steps or Sweep targets repeat it.
	maxRequestExpectBytes = 1 << 20
)

// Sizes in bytes, on 64-bit platforms, that expectCost adds up.
const (
	instBytes = 40 // a syntax.Inst
	runeBytes = 4
	// progOverhead is an expectProg and its syntax.Prog, and the
	// request's map entry for it; seenOverhead the map itself, with
	// room for its first entries.
	progOverhead = 512
	seenOverhead = 512
	// matcherBytes is a matcher.
	matcherBytes = 320
)

// allocated bounds what the runtime allocates for n bytes: its size
// classes round up by less than a fifth (16 bytes at the smallest), large
// objects to 8 KiB pages.
func allocated(n int64) int64 {
	if n > 32<<10 {
		return (n + 8<<10 - 1) &^ (8<<10 - 1)
	}
	return n + n/5 + 16
}

// expectCost is what an expression costs, in bytes: its program, held as
// long as the request runs, and the state matching it needs, held while a
// probe waits in its step.
type expectCost struct {
	prog, run int64
}

func (c expectCost) total() int64 { return c.prog + c.run }

// progSize bounds the program compiled from a parsed expression.
type progSize struct {
	// insts counts instructions; threads those that consume a rune or
	// match, which are where matcher's threads wait; runes the runes of
	// the character classes and literals the instructions carry.
	insts, threads, runes int64
}

// sizeOf bounds what syntax.Compile makes of re once simplified, from the
// tree as parsed, without simplifying it: simplifying expands each repeat
// into copies, which is the memory this bound is to avoid spending. It
// counts as regexp/syntax's own size check does (a repeat multiplies its
// subexpression), plus the runes. The parser has refused trees of more
// than some 3 million instructions, so the sums cannot overflow.
func sizeOf(re *syntax.Regexp) progSize {
	var s progSize
	switch re.Op {
	case syntax.OpLiteral:
		n := int64(len(re.Rune))
		s = progSize{insts: n, threads: n, runes: n}
	case syntax.OpCharClass:
		s = progSize{insts: 1, threads: 1, runes: int64(len(re.Rune))}
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		// Both share a package-level range list of at most 4 runes.
		s = progSize{insts: 1, threads: 1, runes: 4}
	case syntax.OpCapture, syntax.OpStar:
		s = sizeOf(re.Sub[0])
		s.insts += 2
	case syntax.OpPlus, syntax.OpQuest:
		s = sizeOf(re.Sub[0])
		s.insts++
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range re.Sub {
			ss := sizeOf(sub)
			s.insts += ss.insts
			s.threads += ss.threads
			s.runes += ss.runes
		}
		if re.Op == syntax.OpAlternate && len(re.Sub) > 1 {
			s.insts += int64(len(re.Sub)) - 1
		}
	case syntax.OpRepeat:
		sub := sizeOf(re.Sub[0])
		// The copies share the subexpression's runes.
		s.runes = sub.runes
		switch {
		case re.Max == -1 && re.Min == 0:
			s.insts, s.threads = 2+sub.insts, sub.threads // x*
		case re.Max == -1:
			s.insts, s.threads = 1+int64(re.Min)*sub.insts, int64(re.Min)*sub.threads // xx+
		default:
			// x{2,5} is xx(x(x(x)?)?)?
			s.insts, s.threads = int64(re.Max)*sub.insts+int64(re.Max-re.Min), int64(re.Max)*sub.threads
		}
	}
	s.insts = max(s.insts, 1)
	return s
}

// costOf is the cost of a program of size s whose matches have ncap
// capture positions (two per group, the whole match's included), counted
// as expectProg and matcher allocate.
func costOf(s progSize, ncap int, source string) expectCost {
	// The program, plus Fail and Match, which Compile adds.
	insts := s.insts + 2
	threads := s.threads + 1
	caps := int64(ncap) * 8
	prog := progOverhead + allocated(insts*instBytes) + allocated(s.runes*runeBytes) +
		// The groups' names, the string they are cut from, and the
		// literal prefix.
		allocated(int64(ncap/2)*16) + allocated(int64(len(source))+4) + allocated(insts*utf8.UTFMax)
	run := matcherBytes + 4*allocated(caps) +
		// The queue (sparse and dense) and the closure stack, by
		// instruction; the seeds, by thread instruction; the pool and
		// the captures, of two threads for each.
		allocated(insts*4) + allocated(insts*8) + allocated(insts*16) + allocated(threads*8) +
		allocated(2*threads*4) + allocated(2*threads*caps)
	return expectCost{prog: prog, run: run}
}

// expectProg is an expect's compiled expression, shared by every step (and
// Sweep target) of a request that has the same source.
type expectProg struct {
	// source is the expression as the request gave it.
	source string
	prog   *syntax.Prog
	// ncap is the number of capture positions, two per group, the whole
	// match's included.
	ncap int
	// names are the groups' names, "" when unnamed; names[0] is the whole
	// match's.
	names []string
	// cond is the empty-width conditions every match starts with.
	cond syntax.EmptyOp
	// prefix is a literal every match starts with, when there is one.
	prefix string
	// threads counts the instructions that consume a rune or match.
	threads int
	cost    expectCost
}

// expects compiles a request's expressions, each distinct source once,
// and keeps count of what the request holds.
type expects struct {
	// seen holds each source met, compiled or refused.
	seen map[string]compiled
	// held counts the programs compiled, parsed the programs of every
	// expression parsed, refused or not: parsing costs memory too, if
	// only for a while.
	held, parsed int64
	// over is set once the request passed maxRequestExpectBytes, held or
	// parsed: what is left is not parsed, as the request is refused
	// already.
	over bool
}

// compiled is a source's program, or why it has none.
type compiled struct {
	prog    *expectProg
	refusal string
	// over says the refusal is the request's cap.
	over bool
}

// compile returns the program of an expect's expression, or nil with a
// violation of field.
func (e *expects) compile(v *violations, field, source string) *expectProg {
	c, ok := e.seen[source]
	if !ok {
		if e.over {
			// One violation says the request is over its cap.
			return nil
		}
		if e.seen == nil {
			e.seen = map[string]compiled{}
			e.held, e.parsed = seenOverhead, seenOverhead
		}
		c = e.compileNew(source)
		e.seen[source] = c
	}
	if c.prog == nil && (!ok || !c.over) {
		v.add(field, "%s", c.refusal)
	}
	return c.prog
}

// compileNew compiles a source not met before in the request.
func (e *expects) compileNew(source string) compiled {
	refuse := func(format string, args ...any) compiled {
		return compiled{refusal: fmt.Sprintf(format, args...)}
	}
	if len(source) > maxExpectLength {
		return refuse("%d bytes is over the cap of %d", len(source), maxExpectLength)
	}
	re, err := parseExpect(source)
	if err != nil {
		return refuse("not an RE2 regular expression: %v", err)
	}
	ncap := 2 * (re.MaxCap() + 1)
	cost := costOf(sizeOf(re), ncap, source)
	if e.parsed += cost.prog; e.parsed > maxRequestExpectBytes {
		e.over = true
	}
	if cost.total() > maxExpectCost {
		return refuse("costs %d bytes compiled (its program and the state matching it needs), over the cap of %d", cost.total(), maxExpectCost)
	}
	if e.held+cost.prog > maxRequestExpectBytes {
		e.over = true
		c := refuse("the request's distinct expressions take %d bytes compiled with this one, over the cap of %d a request", e.held+cost.prog, maxRequestExpectBytes)
		c.over = true
		return c
	}
	p := &expectProg{source: source, ncap: ncap, names: re.CapNames(), cost: cost}
	if p.prog, err = syntax.Compile(re.Simplify()); err != nil {
		return refuse("not an RE2 regular expression: %v", err)
	}
	compact(p.prog)
	p.cond = p.prog.StartCond()
	p.prefix, _ = p.prog.Prefix()
	for i := range p.prog.Inst {
		switch p.prog.Inst[i].Op {
		case syntax.InstMatch, syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			p.threads++
		}
	}
	e.held += cost.prog
	return compiled{prog: p}
}

// parseExpect parses an expect's expression: multi-line, with the flags
// regexp.Compile gives RE2 syntax.
func parseExpect(source string) (*syntax.Regexp, error) {
	return syntax.Parse("(?m)"+source, syntax.Perl)
}

// compact gives prog exactly the memory it needs: its instructions in a
// slice of their own length, and the runes they match in one array, not
// in the parse tree's nodes, which would otherwise all stay live.
func compact(prog *syntax.Prog) {
	prog.Inst = slices.Clone(prog.Inst)
	type key struct {
		first *rune
		n     int
	}
	at := map[key]int{}
	n := 0
	for _, in := range prog.Inst {
		if len(in.Rune) == 0 {
			continue
		}
		k := key{&in.Rune[0], len(in.Rune)}
		if _, ok := at[k]; !ok {
			at[k] = n
			n += len(in.Rune)
		}
	}
	runes := make([]rune, n)
	for i := range prog.Inst {
		in := &prog.Inst[i]
		if len(in.Rune) == 0 {
			continue
		}
		o := at[key{&in.Rune[0], len(in.Rune)}]
		copy(runes[o:], in.Rune)
		in.Rune = runes[o : o+len(in.Rune) : o+len(in.Rune)]
	}
}

// template is a send_template, read against the expect before it as Go's
// regexp.Expand reads a template: text, and references to groups.
type template struct {
	parts []templatePart
	// most is the longest its expansion can be, in bytes: its text, and
	// maxGroupBytes for each reference to a group the expect has.
	most int
}

// templatePart is text, or a reference to the first of groups that took
// part in the match (a name can be several groups').
type templatePart struct {
	text   string
	groups []int
}

// compileTemplate reads s as regexp.Expand does: $$ is a $; $name and
// ${name} name a group by number or name; any other $ is itself. A
// reference to a group that prev lacks, or with no expect before (prev
// nil), expands to nothing and is dropped.
func compileTemplate(s string, prev *expectProg) *template {
	t := &template{}
	text := func(b string) {
		if b == "" {
			return
		}
		if n := len(t.parts); n > 0 && t.parts[n-1].groups == nil {
			t.parts[n-1].text += b
		} else {
			t.parts = append(t.parts, templatePart{text: b})
		}
		t.most += len(b)
	}
	for {
		before, after, ok := strings.Cut(s, "$")
		if !ok {
			break
		}
		text(before)
		s = after
		if strings.HasPrefix(s, "$") {
			text("$")
			s = s[1:]
			continue
		}
		name, num, rest, ok := extractName(s)
		if !ok {
			text("$")
			continue
		}
		s = rest
		var groups []int
		if prev != nil {
			for g, n := range prev.names {
				if num == g || num < 0 && n == name {
					groups = append(groups, g)
				}
			}
		}
		if groups != nil {
			t.parts = append(t.parts, templatePart{groups: groups})
			t.most += maxGroupBytes
		}
	}
	text(s)
	return t
}

// extractName reads the name of a reference after its $, as
// regexp.Expand does: letters, digits and underscores, in braces or not;
// num is its number when it is one (without leading zeros), else -1.
func extractName(s string) (name string, num int, rest string, ok bool) {
	brace := strings.HasPrefix(s, "{")
	if brace {
		s = s[1:]
	}
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		i += size
	}
	if i == 0 {
		return "", 0, "", false
	}
	name = s[:i]
	if brace {
		if i >= len(s) || s[i] != '}' {
			return "", 0, "", false
		}
		i++
	}
	num = 0
	for j := 0; j < len(name); j++ {
		if name[j] < '0' || '9' < name[j] || num >= 1e8 {
			num = -1
			break
		}
		num = num*10 + int(name[j]-'0')
	}
	if name[0] == '0' && len(name) > 1 {
		num = -1
	}
	return name, num, s[i:], true
}

// render appends t, filled in, to dst with groups, the last match's (nil
// for a group that took no part in it).
func (t *template) render(dst []byte, groups [][]byte) []byte {
	for _, p := range t.parts {
		if p.groups == nil {
			dst = append(dst, p.text...)
			continue
		}
		for _, g := range p.groups {
			if g < len(groups) && groups[g] != nil {
				dst = append(dst, groups[g]...)
				break
			}
		}
	}
	return dst
}
