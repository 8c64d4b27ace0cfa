// Package buildinfo says which build of netprobe is running, for the
// binaries' --version.
package buildinfo

import "runtime/debug"

// version, when set at link time (-ldflags "-X
// github.com/netprobe/netprobe/internal/buildinfo.version=v1.2.3"), is the
// version an image or release build was stamped with.
var version string

// Version is the stamped version, or else the module version with the VCS
// revision when built from a checkout.
func Version() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev + modified
	}
	return v
}
