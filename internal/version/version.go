// Package version tells which build of peergate is running, from the build information the Go
// toolchain embeds in every binary (runtime/debug.ReadBuildInfo): the module version, the VCS
// revision and time, and the Go version.
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Info describes one build. Fields the toolchain did not record are empty.
type Info struct {
	Version  string `json:"version"`            // module version: "v1.2.3", or "(devel)" for a build from a checkout
	Revision string `json:"revision,omitempty"` // VCS revision (commit hash)
	Time     string `json:"time,omitempty"`     // VCS commit time, RFC 3339
	Modified bool   `json:"modified,omitempty"` // the work tree had uncommitted changes
	Go       string `json:"go"`                 // the Go version that built the binary
}

// Get returns the running binary's build information.
func Get() Info {
	in := Info{Version: "(devel)", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if v := bi.Main.Version; v != "" {
		in.Version = v
	}
	if bi.GoVersion != "" {
		in.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String returns one line: "peergate v1.2.3 (revision 0123abcd 2026-12-02T10:00:00Z, modified) go1.26.8".
func (in Info) String() string {
	var b strings.Builder
	b.WriteString("peergate " + in.Version)
	var details []string
	if in.Revision != "" {
		details = append(details, "revision "+in.Revision)
	}
	if in.Time != "" {
		details = append(details, in.Time)
	}
	if in.Modified {
		details = append(details, "modified")
	}
	if len(details) > 0 {
		b.WriteString(" (" + strings.Join(details, ", ") + ")")
	}
	b.WriteString(" " + in.Go)
	return b.String()
}
