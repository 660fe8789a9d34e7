module example.com/portcullis-verify-assertion

go 1.19
