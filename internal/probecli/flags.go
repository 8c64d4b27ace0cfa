package probecli

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// duration is a flag value of a duration that says what it wanted when
// given a bare number: "5" is "5s" to somebody used to ping.
type duration time.Duration

var _ pflag.Value = (*duration)(nil)

func (d *duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			return fmt.Errorf("%q has no unit: did you mean %ss (or %sms)?", s, s, s)
		}
		return fmt.Errorf("%q is not a duration such as 500ms, 5s or 1m", s)
	}
	*d = duration(v)
	return nil
}

func (d *duration) String() string { return time.Duration(*d).String() }
func (d *duration) Type() string   { return "duration" }

// durationFlag defines a duration flag on fs.
func durationFlag(fs *pflag.FlagSet, p *time.Duration, name, short string, value time.Duration, usage string) {
	*p = value
	fs.VarP((*duration)(p), name, short, usage)
}
