package redact

import "testing"

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://www.spamhaus.org/drop/drop.txt", "https://www.spamhaus.org/drop/drop.txt"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://bouncer:s3cret@127.0.0.1:8080/", "http://bouncer:xxxxx@127.0.0.1:8080/"},
		{"http://bouncer@127.0.0.1:8080/", "http://bouncer@127.0.0.1:8080/"},
		{"https://download.example/geo?edition_id=GeoLite2-Country&license_key=abc123&suffix=tar.gz",
			"https://download.example/geo?edition_id=GeoLite2-Country&license_key=xxxxx&suffix=tar.gz"},
		{"https://x.example/l?X-Amz-Signature=deadbeef&page=2", "https://x.example/l?X-Amz-Signature=xxxxx&page=2"},
		{"https://x.example/l?access_token=t&API_KEY=k", "https://x.example/l?API_KEY=xxxxx&access_token=xxxxx"},
		{"https://x.example/l?a=%zz", "https://x.example/l?xxxxx"},
		{"file:///etc/peergate/drop.txt", "file:///etc/peergate/drop.txt"},
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"unix:/run/app.sock", "unix:/run/app.sock"},
		{"", ""},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzURL(f *testing.F) {
	f.Add("http://u:p@h/?key=1")
	f.Fuzz(func(t *testing.T, s string) {
		got := URL(s)
		if got == s {
			return
		}
		if URL(got) != got { // what is shown again shows the same
			t.Errorf("URL(%q) = %q, and again %q", s, got, URL(got))
		}
	})
}
