(function () {
  var form = document.getElementById('passkey-form');
  var start = document.getElementById('passkey-start');
  var status = document.getElementById('passkey-status');
  if (!form || !start || !status) return;
  function say(text) {
    status.textContent = text;
    status.hidden = false;
    status.focus();
  }
  if (!window.PublicKeyCredential || !navigator.credentials) {
    say('This browser cannot use passkeys. ' + (form.getAttribute('data-fallback') || ''));
    return;
  }
  function enc(buf) {
    var bytes = new Uint8Array(buf), s = '';
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  function dec(text) {
    var s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4));
    var bytes = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes.buffer;
  }
  var create = form.getAttribute('data-ceremony') === 'create';
  start.disabled = false;
  start.addEventListener('click', function () {
    var o = JSON.parse(form.getAttribute('data-options'));
    o.challenge = dec(o.challenge);
    (create ? o.excludeCredentials : o.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    if (create) o.user.id = dec(o.user.id);
    start.disabled = true;
    status.hidden = true;
    var call = create ? navigator.credentials.create({ publicKey: o }) : navigator.credentials.get({ publicKey: o });
    call.then(function (c) {
      var r = c.response, out = { id: c.id, rawId: enc(c.rawId), type: c.type,
        clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
        response: { clientDataJSON: enc(r.clientDataJSON) } };
      if (create) {
        out.response.attestationObject = enc(r.attestationObject);
        out.response.transports = r.getTransports ? r.getTransports() : [];
      } else {
        out.response.authenticatorData = enc(r.authenticatorData);
        out.response.signature = enc(r.signature);
        if (r.userHandle) out.response.userHandle = enc(r.userHandle);
      }
      document.getElementById('passkey-credential').value = JSON.stringify(out);
      form.submit();
    }, function (e) {
      start.disabled = false;
      say((e && e.name === 'NotAllowedError' ? 'The passkey request was cancelled or timed out.' :
        'The passkey could not be used.') + ' Try again, or ' + (form.getAttribute('data-fallback') || 'reload the page.'));
    });
  });
})();
