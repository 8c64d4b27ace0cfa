// Package settings declares each setting of a command once: a field of a
// struct whose tags give its flag name, environment twin, default, group
// and help. Register puts the fields on a pflag.FlagSet, Environ fills the
// flags not given on the command line from their environment twins,
// Defaults gives a struct built in code the same defaults, and Markdown
// renders the table the docs show. So a flag, the server's default for
// it, its environment variable and its line in the docs cannot drift
// apart.
//
// The tags:
//
//	flag:"max-in-flight"   the flag's name; a field without one is not a setting
//	short:"s"              a one-letter shorthand
//	env:"NETPROBE_X"       the environment twin, read when the flag is not given
//	default:"512"          the default, as the flag would be written
//	sep:";"                what separates a list's values in one flag and in its environment
//	                       twin; without it, each flag is one value and the twin takes commas
//	group:"Limits"         the heading it is listed under
//	help:"..."             one or more sentences
//	docs:"..."             the docs table's text, when shorter than help
//
// Struct fields without a flag tag are walked into, so that a command's
// settings can embed a package's Config. The field types are string, bool,
// int, uint64, float64, time.Duration and []string.
package settings

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Setting is one setting: a field and its tags.
type Setting struct {
	Name, Short, Env, Default, Group, Help, Docs string
	// Sep separates a list's values in its environment twin, and, when
	// the tag gives it (split), in one flag too.
	Sep   string
	split bool
	field reflect.Value
}

// Of lists the settings of *cfg, a pointer to a struct, in the order of
// its fields.
func Of(cfg any) []Setting {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("settings.Of(%T): want a pointer to a struct", cfg))
	}
	return walk(nil, v.Elem())
}

var durationType = reflect.TypeFor[time.Duration]()

func walk(out []Setting, v reflect.Value) []Setting {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, ok := f.Tag.Lookup("flag")
		if !ok {
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				out = walk(out, v.Field(i))
			}
			continue
		}
		s := Setting{
			Name:    name,
			Short:   f.Tag.Get("short"),
			Env:     f.Tag.Get("env"),
			Default: f.Tag.Get("default"),
			Sep:     f.Tag.Get("sep"),
			Group:   f.Tag.Get("group"),
			Help:    f.Tag.Get("help"),
			Docs:    f.Tag.Get("docs"),
			field:   v.Field(i),
		}
		if s.split = s.Sep != ""; !s.split {
			s.Sep = ","
		}
		out = append(out, s)
	}
	return out
}

// Value is the setting's value now, as its flag would be written.
func (s Setting) Value() string {
	switch v := s.field.Interface().(type) {
	case []string:
		return strings.Join(v, s.Sep)
	default:
		return fmt.Sprint(v)
	}
}

// Defaults sets each setting of *cfg that is still its type's zero value
// to its default. A server calls it on the Config it is given, so that
// one built in code (a test, the CLI's in-process server) has the same
// defaults as the command's flags.
func Defaults(cfg any) error {
	for _, s := range Of(cfg) {
		if s.Default == "" || !s.field.IsZero() {
			continue
		}
		if err := set(s.field, s.Default, s.Sep); err != nil {
			return fmt.Errorf("--%s default %q: %w", s.Name, s.Default, err)
		}
	}
	return nil
}

// Register sets *cfg's settings to their defaults and defines them on fs,
// bound to the fields.
func Register(fs *pflag.FlagSet, cfg any) ([]Setting, error) {
	list := Of(cfg)
	for _, s := range list {
		if s.Default != "" {
			if err := set(s.field, s.Default, s.Sep); err != nil {
				return nil, fmt.Errorf("--%s default %q: %w", s.Name, s.Default, err)
			}
		}
		usage := s.Help
		if s.Env != "" {
			usage += " (env " + s.Env + ")"
		}
		p := s.field.Addr().Interface()
		switch p := p.(type) {
		case *string:
			fs.StringVarP(p, s.Name, s.Short, *p, usage)
		case *bool:
			fs.BoolVarP(p, s.Name, s.Short, *p, usage)
		case *int:
			fs.IntVarP(p, s.Name, s.Short, *p, usage)
		case *uint64:
			fs.Uint64VarP(p, s.Name, s.Short, *p, usage)
		case *float64:
			fs.Float64VarP(p, s.Name, s.Short, *p, usage)
		case *time.Duration:
			fs.VarP((*Duration)(p), s.Name, s.Short, usage)
		case *[]string:
			if s.split {
				fs.VarP(&listValue{p: p, sep: s.Sep}, s.Name, s.Short, usage)
				break
			}
			// Every value is one item, commas and all.
			fs.StringArrayVarP(p, s.Name, s.Short, *p, usage)
		default:
			return nil, fmt.Errorf("--%s: a setting cannot be a %T", s.Name, p)
		}
		if s.Group != "" {
			fs.SetAnnotation(s.Name, groupAnnotation, []string{s.Group})
		}
	}
	return list, nil
}

// groupAnnotation holds a flag's group, for Usage.
const groupAnnotation = "settings.group"

// Environ sets each of the settings not given on fs's command line from
// its environment twin, read with getenv, when that is not empty.
func Environ(fs *pflag.FlagSet, list []Setting, getenv func(string) string) error {
	for _, s := range list {
		if s.Env == "" || fs.Changed(s.Name) {
			continue
		}
		v := getenv(s.Env)
		if v == "" {
			continue
		}
		values := []string{v}
		if s.field.Kind() == reflect.Slice {
			values = strings.Split(v, s.Sep)
		}
		for _, v := range values {
			if err := fs.Set(s.Name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", s.Env, v, err)
			}
		}
	}
	return nil
}

// set parses text into the field v as its flag would.
func set(v reflect.Value, text, sep string) error {
	switch p := v.Addr().Interface().(type) {
	case *string:
		*p = text
	case *bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return err
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(text)
		if err != nil {
			return err
		}
		*p = n
	case *uint64:
		n, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			return err
		}
		*p = n
	case *float64:
		n, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return err
		}
		*p = n
	case *time.Duration:
		return (*Duration)(p).Set(text)
	case *[]string:
		*p = strings.Split(text, sep)
	default:
		return fmt.Errorf("a setting cannot be a %T", p)
	}
	return nil
}

// Usage writes fs's flags grouped under their headings, in the order
// their groups first appear, flags of no group first.
func Usage(fs *pflag.FlagSet) string {
	var groups []string
	sets := map[string]*pflag.FlagSet{}
	fs.VisitAll(func(f *pflag.Flag) {
		g := ""
		if a := f.Annotations[groupAnnotation]; len(a) > 0 {
			g = a[0]
		}
		if sets[g] == nil {
			sets[g] = pflag.NewFlagSet(g, pflag.ContinueOnError)
			sets[g].SortFlags = false
			if g != "" {
				groups = append(groups, g)
			}
		}
		sets[g].AddFlag(f)
	})
	var b strings.Builder
	if ungrouped := sets[""]; ungrouped != nil {
		b.WriteString("Flags:\n" + ungrouped.FlagUsages())
	}
	for _, g := range groups {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(g + ":\n" + sets[g].FlagUsages())
	}
	return b.String()
}

// Markdown renders the settings as the docs' table, one per group: flag,
// environment twin, default, and what it does.
func Markdown(list []Setting) string {
	var groups []string
	byGroup := map[string][]Setting{}
	for _, s := range list {
		if _, ok := byGroup[s.Group]; !ok {
			groups = append(groups, s.Group)
		}
		byGroup[s.Group] = append(byGroup[s.Group], s)
	}
	var b strings.Builder
	for i, g := range groups {
		if i > 0 {
			b.WriteString("\n")
		}
		if g != "" {
			fmt.Fprintf(&b, "**%s**\n\n", g)
		}
		b.WriteString("| flag | environment | default | what it does |\n|---|---|---|---|\n")
		for _, s := range byGroup[g] {
			text := s.Docs
			if text == "" {
				text = s.Help
			}
			def := ""
			if s.Default != "" {
				def = "`" + s.Default + "`"
			}
			fmt.Fprintf(&b, "| `--%s` | %s | %s | %s |\n", s.Name, s.Env, def, strings.ReplaceAll(text, "|", `\|`))
		}
	}
	return b.String()
}

// Duration is a flag value of a duration that says what it wanted when
// given a bare number: "5" is "5s" to somebody used to ping.
type Duration time.Duration

var _ pflag.Value = (*Duration)(nil)

func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			return fmt.Errorf("%q has no unit: did you mean %ss (or %sms)?", s, s, s)
		}
		return fmt.Errorf("%q is not a duration such as 500ms, 5s or 1m", s)
	}
	*d = Duration(v)
	return nil
}

// String is the duration as a flag would be written; zero is "0", which
// pflag's help knows for a zero default and leaves out, where "0s" would
// add "(default 0s)" after a help that says what none means.
func (d *Duration) String() string {
	if *d == 0 {
		return "0"
	}
	return time.Duration(*d).String()
}

func (d *Duration) Type() string { return "duration" }

// DurationVar defines a duration flag on fs, for a setting declared in
// code rather than by tags.
func DurationVar(fs *pflag.FlagSet, p *time.Duration, name, short string, value time.Duration, usage string) {
	*p = value
	fs.VarP((*Duration)(p), name, short, usage)
}

// listValue is the flag value of a list whose values one flag may give
// several of, split by sep: its default is replaced by the first flag,
// as pflag's own lists do.
type listValue struct {
	p       *[]string
	sep     string
	changed bool
}

func (l *listValue) Set(v string) error {
	if !l.changed {
		*l.p, l.changed = nil, true
	}
	*l.p = append(*l.p, strings.Split(v, l.sep)...)
	return nil
}

func (l *listValue) String() string { return strings.Join(*l.p, l.sep) }
func (l *listValue) Type() string   { return "list" }
