-- A feed's text encoding (consumer/transcode.py): its files are decoded from it to UTF-8 as
-- they stream. 'auto' finds it per file (BOM, strict UTF-8, else a detector).
ALTER TABLE feeds ADD COLUMN encoding text NOT NULL DEFAULT 'utf-8'
    CHECK (encoding IN ('utf-8', 'utf-16', 'windows-1252', 'iso-8859-1', 'auto'));
