// Package redact hides the secrets an operator may write into a URL (a password, an API key in
// the query) before the URL is shown: in logs, metrics labels, /config and rule origins.
package redact

import (
	"net/url"
	"strings"
)

// Mask replaces each secret.
const Mask = "xxxxx"

// secretWords mark a query parameter whose value is a secret: any name containing one of them,
// in any case (license_key, apikey, access_token, X-Amz-Signature, ...).
var secretWords = []string{"key", "token", "secret", "pass", "auth", "sig", "credential", "session"}

// URL returns s with the password of its user info and the values of its secret-looking query
// parameters replaced by Mask. A string that does not parse as a URL with a scheme is returned as
// it is: it holds no URL secret (a host:port, a path).
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || (u.User == nil && u.RawQuery == "") {
		return s
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = Mask // cannot tell the parameters apart: hide them all
		} else {
			changed := false
			for name, vals := range q {
				if secret(name) {
					for i := range vals {
						vals[i] = Mask
					}
					changed = true
				}
			}
			if changed {
				u.RawQuery = q.Encode()
			}
		}
	}
	return u.Redacted()
}

func secret(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
