// Package buildinfo says which build of netprobe is running, for the
// binaries' --version.
package buildinfo

import "runtime/debug"

// version, when set at link time (-ldflags "-X
// github.com/netprobe/netprobe/internal/buildinfo.version=v1.2.3"), is the
// version an image or release build was stamped with.
var version string

// revision, set at link time beside version, is the commit built.
var revision string

// Version is the stamped version (with the commit, when stamped too), or
// else the module version with the VCS revision when built from a
// checkout.
func Version() string {
	if version != "" && revision != "" {
		return version + " (" + revision + ")"
	}
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
