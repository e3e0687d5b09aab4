package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"

	"github.com/peergate/peergate/gate/limit"
)

// Field is one entry of a View.
type Field struct {
	Key   string
	Value any
}

// View is a JSON object whose entries keep their order: a service as the admin listener's /config
// shows it.
type View []Field

// MarshalJSON writes v as a JSON object, its entries in order.
func (v View) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.Key)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(f.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ViewOptions are choices of ShowService.
type ViewOptions struct {
	// ExecArgs shows a spawned handler's arguments, which may hold secrets; without it exec shows
	// the program alone and exec_args_hidden counts the arguments left out.
	ExecArgs bool
}

// ShowService returns s as /config shows it: what the row of each key of a service shows, in the
// order of the rows. A key at its zero value that means "none" is left out.
func ShowService(s *Service, o ViewOptions) View {
	var v View
	for _, k := range serviceKeys {
		if k.show != nil {
			v = append(v, k.show(k.name, s, o)...)
		}
	}
	return v
}

type showFunc = func(key string, s *Service, o ViewOptions) View

// shown shows get(s) under the key's name.
func shown(get func(*Service) any) showFunc {
	return func(key string, s *Service, _ ViewOptions) View { return View{{key, get(s)}} }
}

// shownSet is shown, but leaves out a zero value or an empty list (as json's omitempty does).
func shownSet(get func(*Service) any) showFunc {
	return func(key string, s *Service, _ ViewOptions) View {
		if x := get(s); !empty(x) {
			return View{{key, x}}
		}
		return nil
	}
}

// behindProxies is shown for a service with trusted_proxies, and nothing for one without.
func behindProxies(get func(*Service) any) showFunc {
	return func(key string, s *Service, _ ViewOptions) View {
		if len(s.TrustedProxies) == 0 {
			return nil
		}
		return View{{key, get(s)}}
	}
}

// limited shows, for a service with per-source limits, get of its limits with their defaults
// filled in, when that is not zero; nothing for a service without limits.
func limited(get func(limit.Config) any) showFunc {
	return func(key string, s *Service, _ ViewOptions) View {
		c := s.Limits()
		if !c.Enabled() {
			return nil
		}
		if x := get(c.WithDefaults()); !empty(x) {
			return View{{key, x}}
		}
		return nil
	}
}

func empty(x any) bool {
	if x == nil {
		return true
	}
	r := reflect.ValueOf(x)
	switch r.Kind() {
	case reflect.Slice, reflect.Map:
		return r.Len() == 0
	}
	return r.IsZero()
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// showListen shows the listen addresses, and unix_perms: what each Unix listen entry sets on its
// socket file.
func showListen(key string, s *Service, _ ViewOptions) View {
	v := View{{key, s.Listen}}
	if len(s.UnixPerms) == 0 {
		return v
	}
	type perm struct {
		Mode string `json:"mode,omitempty"`
		UID  *int   `json:"uid,omitempty"`
		GID  *int   `json:"gid,omitempty"`
	}
	perms := map[string]perm{}
	for addr, p := range s.UnixPerms {
		e := perm{}
		if p.Mode != 0 {
			e.Mode = fmt.Sprintf("%04o", uint32(p.Mode))
		}
		if p.UID >= 0 {
			e.UID = &p.UID
		}
		if p.GID >= 0 {
			e.GID = &p.GID
		}
		perms[addr] = e
	}
	return append(v, Field{"unix_perms", perms})
}

// showExec shows the program, and its arguments only when o asks for them (else how many were
// left out, as exec_args_hidden).
func showExec(key string, s *Service, o ViewOptions) View {
	switch {
	case len(s.Exec) == 0:
		return nil
	case len(s.Exec) > 1 && !o.ExecArgs:
		return View{{key, s.Exec[:1]}, {"exec_args_hidden", len(s.Exec) - 1}}
	}
	return View{{key, s.Exec}}
}

// showRate shows the rate in connections a second, as rate_per_second.
func showRate(_ string, s *Service, o ViewOptions) View {
	return limited(func(c limit.Config) any { return c.Rate })("rate_per_second", s, o)
}

// showID shows a user or group as written, and the id it was resolved to under idKey.
func showID(get func(*Service) (string, int), idKey string) showFunc {
	return func(key string, s *Service, _ ViewOptions) View {
		var v View
		name, id := get(s)
		if name != "" {
			v = append(v, Field{key, name})
		}
		if id >= 0 {
			v = append(v, Field{idKey, id})
		}
		return v
	}
}

func showBanAfter(key string, s *Service, _ ViewOptions) View {
	b := s.BanAfter
	if b == nil {
		return nil
	}
	return View{{key, struct {
		Denials   int    `json:"denials,omitempty"`
		LimitHits int    `json:"limit_hits,omitempty"`
		Within    string `json:"within"`
		For       string `json:"for"`
	}{b.Denials, b.LimitHits, b.Within.String(), b.For.String()}}}
}
