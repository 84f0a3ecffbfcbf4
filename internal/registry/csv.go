package registry

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Row is one data row of an address import file.
type Row struct {
	Num  int        // row number in the file, the header being row 1
	Rule store.Rule // valid when Err is nil
	Err  error
}

// maxImportSize bounds an import file: a registry of this many addresses
// is already far beyond what a person reviews in a preview.
const maxImportSize = 16 << 20

// ReadAddressCSV reads an address import file (DESIGN.md §10): a header
// row, then `email,user[,security[,dkim,spf,dmarc]]`. It tolerates a UTF-8
// byte order mark, CRLF line ends, quoted fields, surrounding spaces and
// blank lines. Each row gets its own error; the error returned is for the
// file as a whole (unreadable, empty, no header).
func ReadAddressCSV(r io.Reader) ([]Row, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxImportSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxImportSize {
		return nil, fmt.Errorf("file larger than %d MiB", maxImportSize>>20)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = false
	var rows []Row
	header := false
	seen := make(map[string]int)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return rows, fmt.Errorf("row %d: %v", pe.StartLine, pe.Err)
			}
			return rows, err
		}
		line, _ := cr.FieldPos(0)
		if blank(rec) {
			continue
		}
		if !header {
			if err := checkHeader(rec); err != nil {
				return nil, fmt.Errorf("row %d: %w", line, err)
			}
			header = true
			continue
		}
		row := Row{Num: line}
		row.Rule, row.Err = parseRow(rec)
		if row.Err == nil {
			if first, dup := seen[row.Rule.Pattern]; dup {
				row.Err = fmt.Errorf("%s is listed twice (also row %d)", row.Rule.Pattern, first)
			} else {
				seen[row.Rule.Pattern] = line
			}
		}
		rows = append(rows, row)
	}
	if !header {
		return nil, errors.New("the file is empty: it needs a header row email,user[,security[,dkim,spf,dmarc]]")
	}
	return rows, nil
}

var csvColumns = []string{"email", "user", "security", "dkim", "spf", "dmarc"}

func checkHeader(rec []string) error {
	if len(rec) < 2 || len(rec) > len(csvColumns) {
		return fmt.Errorf("header %q: want email,user[,security[,dkim,spf,dmarc]]", strings.Join(rec, ","))
	}
	for i, f := range rec {
		if !strings.EqualFold(strings.TrimSpace(f), csvColumns[i]) {
			return fmt.Errorf("header %q: want email,user[,security[,dkim,spf,dmarc]] (column %d is %q, expected %q)",
				strings.Join(rec, ","), i+1, f, csvColumns[i])
		}
	}
	return nil
}

func parseRow(rec []string) (store.Rule, error) {
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	switch len(rec) {
	case 2, 3, 6:
	case 4, 5:
		return store.Rule{}, fmt.Errorf("%d fields: give dkim, spf and dmarc together (email,user,security,dkim,spf,dmarc)", len(rec))
	default:
		return store.Rule{}, fmt.Errorf("%d fields: want email,user[,security[,dkim,spf,dmarc]]", len(rec))
	}
	s := RuleSpec{Kind: store.KindAddress, Pattern: rec[0], User: rec[1]}
	if len(rec) >= 3 {
		s.Security = rec[2]
	}
	if len(rec) == 6 {
		s.DKIM, s.SPF, s.DMARC = rec[3], rec[4], rec[5]
	}
	if s.Security == "ip" {
		return store.Rule{}, errors.New("security ip needs an IP list, which the CSV format has no column for: add this address with `smsmilter address add --security ip --ips ...`")
	}
	return Rule(s)
}

func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}
