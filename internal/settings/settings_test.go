package settings

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

type limits struct {
	MaxInFlight int           `flag:"max-in-flight" env:"T_MAX_IN_FLIGHT" default:"512" group:"Limits" help:"Most probes at once."`
	Timeout     time.Duration `flag:"timeout" env:"T_TIMEOUT" default:"5s" group:"Limits" help:"A probe's timeout." docs:"probe timeout"`
	Rate        float64       `flag:"rate" default:"50" group:"Limits" help:"Probes a second | on average."`
	Bytes       uint64        `flag:"bytes" default:"67108864" group:"Limits" help:"Bytes."`
}

type config struct {
	Listen      string   `flag:"listen" short:"l" env:"T_LISTEN" default:"localhost:7070" help:"Where to serve."`
	Verbose     bool     `flag:"verbose" env:"T_VERBOSE" help:"Say more."`
	Allow       []string `flag:"allow" env:"T_ALLOW" sep:";" group:"Policy" help:"Allow a rule."`
	Servers     []string `flag:"servers" env:"T_SERVERS" group:"Policy" help:"Servers."`
	Limits      limits
	NotASetting string
}

func parse(t *testing.T, args []string, env map[string]string) (*config, error) {
	t.Helper()
	var c config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	list, err := Register(fs, &c)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return &c, Environ(fs, list, func(k string) string { return env[k] })
}

func TestRegister(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want config
	}{
		{"defaults", nil, nil, config{Listen: "localhost:7070", Limits: limits{MaxInFlight: 512, Timeout: 5 * time.Second, Rate: 50, Bytes: 64 << 20}}},
		{"flags", []string{"-l", ":1", "--verbose", "--allow", "10.0.0.0/8,192.0.2.0/24 port 80", "--allow", "::1;192.0.2.9", "--max-in-flight", "3", "--timeout", "1m"}, nil,
			config{Listen: ":1", Verbose: true, Allow: []string{"10.0.0.0/8,192.0.2.0/24 port 80", "::1", "192.0.2.9"}, Limits: limits{MaxInFlight: 3, Timeout: time.Minute, Rate: 50, Bytes: 64 << 20}}},
		{"one value a flag", []string{"--servers", "a,b", "--servers", "c;d"}, map[string]string{"T_SERVERS": "x"},
			config{Listen: "localhost:7070", Servers: []string{"a,b", "c;d"}, Limits: limits{MaxInFlight: 512, Timeout: 5 * time.Second, Rate: 50, Bytes: 64 << 20}}},
		{"one value a flag, several in the twin", nil, map[string]string{"T_SERVERS": "a,b"},
			config{Listen: "localhost:7070", Servers: []string{"a", "b"}, Limits: limits{MaxInFlight: 512, Timeout: 5 * time.Second, Rate: 50, Bytes: 64 << 20}}},
		{"environment", nil, map[string]string{"T_LISTEN": ":2", "T_VERBOSE": "true", "T_ALLOW": "10.0.0.0/8,::1;192.0.2.1", "T_MAX_IN_FLIGHT": "7", "T_TIMEOUT": "2s"},
			config{Listen: ":2", Verbose: true, Allow: []string{"10.0.0.0/8,::1", "192.0.2.1"}, Limits: limits{MaxInFlight: 7, Timeout: 2 * time.Second, Rate: 50, Bytes: 64 << 20}}},
		{"a flag beats its twin", []string{"--listen", ":3", "--allow", "a"}, map[string]string{"T_LISTEN": ":4", "T_ALLOW": "b;c"},
			config{Listen: ":3", Allow: []string{"a"}, Limits: limits{MaxInFlight: 512, Timeout: 5 * time.Second, Rate: 50, Bytes: 64 << 20}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, *got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestRegisterBadValues gives settings values they cannot take, on the
// command line and in the environment: each is an error naming the flag
// or the variable.
func TestRegisterBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--max-in-flight", "many"}, nil, `invalid argument "many" for "--max-in-flight"`},
		{[]string{"--timeout", "5"}, nil, `invalid argument "5" for "--timeout"`},
		{nil, map[string]string{"T_TIMEOUT": "soon"}, `T_TIMEOUT="soon"`},
		{nil, map[string]string{"T_VERBOSE": "yes please"}, `T_VERBOSE="yes please"`},
		{nil, map[string]string{"T_MAX_IN_FLIGHT": "99999999999999999999"}, `T_MAX_IN_FLIGHT="99999999999999999999"`},
	} {
		_, err := parse(t, tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error with %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// TestDefaults fills the zero fields of a config built in code, and keeps
// what was set.
func TestDefaults(t *testing.T) {
	c := config{Limits: limits{MaxInFlight: 9}}
	if err := Defaults(&c); err != nil {
		t.Fatal(err)
	}
	want := config{Listen: "localhost:7070", Limits: limits{MaxInFlight: 9, Timeout: 5 * time.Second, Rate: 50, Bytes: 64 << 20}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	c.Allow = []string{"a", "b"}
	values := map[string]string{}
	for _, s := range Of(&c) {
		values[s.Name] = s.Value()
	}
	for name, want := range map[string]string{"listen": "localhost:7070", "timeout": "5s", "max-in-flight": "9", "allow": "a;b", "verbose": "false"} {
		if values[name] != want {
			t.Errorf("--%s's value %q, want %q", name, values[name], want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	want := "| flag | environment | default | what it does |\n|---|---|---|---|\n" +
		"| `--listen` | T_LISTEN | `localhost:7070` | Where to serve. |\n" +
		"| `--verbose` | T_VERBOSE |  | Say more. |\n" +
		"\n**Policy**\n\n| flag | environment | default | what it does |\n|---|---|---|---|\n" +
		"| `--allow` | T_ALLOW |  | Allow a rule. |\n" +
		"| `--servers` | T_SERVERS |  | Servers. |\n" +
		"\n**Limits**\n\n| flag | environment | default | what it does |\n|---|---|---|---|\n" +
		"| `--max-in-flight` | T_MAX_IN_FLIGHT | `512` | Most probes at once. |\n" +
		"| `--timeout` | T_TIMEOUT | `5s` | probe timeout |\n" +
		"| `--rate` |  | `50` | Probes a second \\| on average. |\n" +
		"| `--bytes` |  | `67108864` | Bytes. |\n"
	if diff := cmp.Diff(want, Markdown(Of(&config{}))); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

func TestUsage(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SortFlags = false
	if _, err := Register(fs, &config{}); err != nil {
		t.Fatal(err)
	}
	u := Usage(fs)
	for _, want := range []string{"Flags:\n  -l, --listen string", "(env T_LISTEN)", "\nPolicy:\n      --allow list", "\nLimits:\n      --max-in-flight int"} {
		if !strings.Contains(u, want) {
			t.Errorf("usage lacks %q:\n%s", want, u)
		}
	}
}

// TestZeroDurationDefault checks that a duration whose default is zero,
// declared by a tag or by DurationVar, shows no "(default 0s)" in the
// help, which says itself what none means; other defaults show once.
func TestZeroDurationDefault(t *testing.T) {
	var c struct {
		Grace time.Duration `flag:"grace" help:"time to wait (default: none)"`
		Wait  time.Duration `flag:"wait" default:"2s" help:"time to wait"`
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	if _, err := Register(fs, &c); err != nil {
		t.Fatal(err)
	}
	var deadline time.Duration
	DurationVar(fs, &deadline, "deadline", "", 0, "time the whole run may take (default: none)")
	var interval time.Duration
	DurationVar(fs, &interval, "interval", "i", time.Second, "time between two runs")
	usage := fs.FlagUsages()
	for _, want := range []string{"(default: none)\n", "time to wait (default 2s)\n", "(default: none)\n", "time between two runs (default 1s)\n"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage has no %q:\n%s", want, usage)
		}
	}
	if n := strings.Count(usage, "(default"); n != 4 {
		t.Errorf("%d defaults in the usage, want one a flag:\n%s", n, usage)
	}
	if err := fs.Parse([]string{"--deadline", fs.Lookup("deadline").Value.String()}); err != nil || deadline != 0 {
		t.Errorf("the zero default does not parse back: %v, %v", deadline, err)
	}
}
